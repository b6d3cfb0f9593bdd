#!/usr/bin/perl
# Registers one user with the Net::SIP user agent (Net::SIP::Simple->register)
# over UDP or TCP and prints what the registrar answered.
#
#   netsip_register.pl --proto udp|tcp --registrar 127.0.0.1:5060 \
#       --user alice --domain example.com [--password PW] [--expires 120] [--timeout 20] [--debug 3]
#
# Prints "contact URI" (the Contact URI it registers), then on success
# "ok expires=<n>" and one "binding <Contact header value>" line per Contact
# of the 200, and exits 0.  With --password it answers a challenge as
# register(auth => [user, password]) does.  Any failure prints "fail ..." and exits 1; the
# alarm bounds the whole run, so it never hangs.  --debug 3 makes Net::SIP
# dump every packet it sends and receives on stderr.
use strict;
use warnings;
use Getopt::Long qw(GetOptions);
use IO::Socket::INET;
use Net::SIP;

my %opt = (proto => 'udp', expires => 120, timeout => 20, debug => 0);
GetOptions(\%opt, 'proto=s', 'registrar=s', 'user=s', 'domain=s', 'password=s',
    'expires=i', 'timeout=i', 'debug=i')
    or die "usage: $0 --proto udp|tcp --registrar HOST:PORT --user U --domain D\n";
for my $need (qw(registrar user domain)) {
    defined $opt{$need} or die "missing --$need\n";
}
$opt{proto} =~ m{^(udp|tcp)$} or die "--proto must be udp or tcp\n";

$SIG{ALRM} = sub { print "fail timeout after $opt{timeout}s\n"; exit 1 };
alarm $opt{timeout};
Net::SIP::Debug->level($opt{debug}) if $opt{debug};

# Our own socket on an ephemeral loopback port (Net::SIP would try 5060 first).
# For TCP this is the leg's listening socket; Net::SIP connects out from it.
my $sock = IO::Socket::INET->new(
    Proto     => $opt{proto},
    LocalAddr => '127.0.0.1',
    LocalPort => 0,
    ($opt{proto} eq 'tcp' ? (Listen => 10, ReuseAddr => 1) : ()),
) or die "cannot create $opt{proto} socket: $!\n";
my $leg = Net::SIP::Leg->new(sock => $sock);

# The registrar exactly as Net::SIP::Simple's documentation writes it
# ("192.0.2.1:5060;transport=udp"): Net::SIP then sends the Request-URI in angle
# brackets, REGISTER <sip:HOST:PORT;transport=udp> SIP/2.0, which sipreg accepts.
my $registrar = "$opt{registrar};transport=$opt{proto}";
# In angle brackets, so ";transport=tcp" is a URI parameter, not a header one.
my $uri = sprintf('sip:%s@127.0.0.1:%d%s', $opt{user}, $sock->sockport,
    $opt{proto} eq 'tcp' ? ';transport=tcp' : '');
my $contact = "<$uri>";

my $ua = Net::SIP::Simple->new(
    registrar => $registrar,
    from      => "sip:$opt{user}\@$opt{domain}",
    contact   => $contact,
    leg       => $leg,
);
print "contact $uri\n";

my ($result, %info);
$ua->register(
    expires  => $opt{expires},
    cb_final => sub { ($result, %info) = @_ },
    (defined $opt{password} ? (auth => [$opt{user}, $opt{password}]) : ()),
);
# With cb_final given, register() returns at once: run the loop until it fires.
$ua->loop(\$result);
alarm 0;

if (defined $result && $result eq 'OK') {
    my $packet = $info{packet};
    my $exp = $info{expires};
    if (!defined $exp) {
        print "fail 2xx without expires for our contact\n";
        exit 1;
    }
    print "ok expires=$exp code=", $packet->code, "\n";
    print "binding $_\n" for $packet->get_header('contact');
    $ua->cleanup;
    exit 0;
}
my $why = defined $info{code} ? "code=$info{code}"
    : defined $info{errno} ? "errno=$info{errno}" : 'unknown error';
print "fail $why\n";
print "response:\n", $info{packet}->as_string if $info{packet};
exit 1;
