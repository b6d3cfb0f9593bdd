// A browser phone: JsSIP registering over WebSocket, exposed to the test page as
// window.Phone (esbuild bundles it).  register() resolves on 'registered' with the
// contact JsSIP bound, and rejects on 'registrationFailed' with its cause.
const JsSIP = require("jssip");

let ua = null;

export function register({ url, uri, password }) {
  return new Promise((resolve, reject) => {
    const socket = new JsSIP.WebSocketInterface(url);
    ua = new JsSIP.UA({
      sockets: [socket],
      uri,
      password,
      register: true,
      register_expires: 300,
      connection_recovery_min_interval: 60,
      connection_recovery_max_interval: 60,
    });
    ua.on("registered", (event) => {
      resolve({ status: event.response.status_code, contact: ua.contact.toString() });
    });
    ua.on("registrationFailed", (event) => {
      const status = event.response ? event.response.status_code : null;
      reject(new Error(`registration failed: ${event.cause} ${status}`));
    });
    ua.start();
  });
}

export function stop() {
  if (ua) ua.stop();
}
