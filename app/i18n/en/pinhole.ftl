# Pinhole's words in English, the source language. Every message is here; a translation
# copies this file to app/i18n/<language>/pinhole.ftl and changes the text after each "=".
# Keep each message on one line (a line break in a message is shown), and the $names as they are.
# Where a language inflects, a server is also passed as $subject, for the start of a sentence
# ("The server" rather than "the server" when none is set).

## How a call ended

call-ended-after = Call with {$peer} ended after {$took}.
call-ended-after-because = Call with {$peer} ended after {$took}: {$why}
missed-call = You missed a call from {$peer}.
call-ended = Call with {$peer} ended.
call-from-cancelled = The call from {$peer} was cancelled.
peer-hung-up = {$peer} hung up.
call-to-cancelled = The call to {$peer} was cancelled.
peer-gave-up = {$peer} gave up before you answered.
peer-declined = {$peer} declined the call.
peer-busy = {$peer} is busy in another call.
peer-offline = {$peer} is not online right now.
peer-no-answer = {$peer} did not answer.
you-no-answer = You did not answer {$peer} in time.
peer-lost = The connection to {$peer} was lost.
server-dropped-call = The server dropped the call.
relay-limit = The server would not carry the call (it relays one call per person).
call-server-lost = The server went away, and the call with {$peer} needed it.
call-server-shut-down = The server shut down (a restart), and the call with {$peer} went through it.
call-server-unreachable = Cannot call {$peer}: the server cannot be reached right now.
peer-silent = Nothing came from {$peer} for 5 seconds: the connection was lost.
self-call = That is you: call someone else, or echo to hear yourself.
call-failed-locally = The call failed on this computer (an audio device or the network).
call-insecure = The call with {$peer} was ended: its encryption keys did not check out, so it could not be private (someone may be interfering between you).
cancelled-by-you = You cancelled the call to {$peer}.
declined-by-you = You declined the call from {$peer}.
call-failed = The call with {$peer} failed: {$why}

## The recent calls list's outcomes (stored in English, shown in these words)

outcome-ended = ended
outcome-cancelled = cancelled
outcome-declined = declined
outcome-busy = busy
outcome-offline = offline
outcome-no-answer = no answer
outcome-connection-lost = connection lost
outcome-server-error = server error
outcome-server-lost = server lost
outcome-server-restart = server restart
outcome-no-server = no server
outcome-that-is-you = that is you
outcome-failed = failed
outcome-not-private = not private
outcome-hung-up = hung up
outcome-missed = missed

## Audio devices

microphone-not-opened = No microphone could be opened ({$detail}). Pick another one in Settings.
speaker-not-opened = No speaker could be opened ({$detail}). Pick another one in Settings.
microphone-failed-in-call = The microphone failed ({$detail}): they cannot hear you.
speaker-failed-in-call = The speaker failed ({$detail}): you cannot hear them.
microphone-unplugged = Your microphone {$from} was unplugged; now using {$to}.
speaker-unplugged = Your speaker {$from} was unplugged; now using {$to}.
microphone-stopped = Your microphone {$from} stopped working ({$why}); now using {$to}.
speaker-stopped = Your speaker {$from} stopped working ({$why}); now using {$to}.

refused = The server refused: {$message}
engine-not-running = The call engine is not running.

## The main view's status lines

server-line = Server: {$server}
server-builtin-local = Server: built into this app (this machine only)
server-builtin-lan = Server: built into this app (this machine and the local network)
lan-hint = Others on your network set their server to {$addresses}
nat-registered = Connection OK: registered with the server.
nat-answered = Connection OK: the server answered (the check took {$ms} ms).
nat-network = Network: {$nat} ({$verdict})
nat-public = Public address: no NAT in the way
nat-proxy = Public address behind a proxy or firewall
nat-behind = Behind NAT: calls go through the router's mapping
nat-unknown = Unknown
nat-mapped = Your address as the server sees it: {$address}
port-mapping-off = Router port mapping: not asked for
port-mapping-asking = Router port mapping: asking the router…
port-mapping-mapped = Router port mapping: {$external} ({$method}): calls can come straight in
port-mapping-none = Router port mapping: none ({$why})
port-mapping-released = Router port mapping: released
nat-failed = Network check failed: {$why}
path-direct-to = Direct to {$remote}
path-direct = Direct
path-relay = Relayed through the server
ringing = Ringing… {$time}
reaching = Reaching them…

## Settings

settings-unreadable = Your settings could not be read: {$error}
settings-not-saved = Settings not saved: {$error}
key-not-saved = Your key could not be saved: {$error}
no-microphone = No microphone: {$why}
test-sound-played = Played: did you hear it?
no-sound = No sound: {$why}

## The registration line

connecting-to = Connecting to {$server}…
online = Online: registered at {$server}
the-server = the server
the-server-subject = The server
server-restarting-now = The server is restarting; signing in again now.
server-restarting-in = The server is restarting; signing in again in {$seconds} s.
loss-closed = it closed the connection
loss-not-answering = it stopped answering
loss-shutting-down = it is shutting down
lost-server-now = Lost the server ({$why}); trying again now.
lost-server-in = Lost the server ({$why}); trying again in {$seconds} s.
replaced = {$name} signed in on another device.
sign-in-again = Sign in here again
retry-in = Trying again in {$seconds} s.
engine-stopped = Not connected to {$server}: the call engine stopped.
not-connected = Not connected to {$server}: {$why}
server-unreachable = The server {$server} cannot be reached: {$detail}
name-taken = Your name is taken on {$server}: someone else registered it first. Choose another name in Settings.
name-confusable = Your name looks too much like a name someone else registered on {$server} (the same letters from another alphabet, or I and l): people could mistake one for the other. Choose another name in Settings.
too-many-names = Your key already holds as many names as {$server} allows one person. Use one of your names, or another server.
name-not-accepted = {$server} does not accept your name. Choose another name in Settings.
bad-signature = {$server} did not accept your key's signature for your name. Choose another name in Settings.
server-full = {$server} is full: it has no room for more people right now.
incompatible = {$server} has no call service for this app ({$detail}): set a server that has it in Settings.
local-failure = Pinhole could not run on this computer: {$detail}

## Security: the server's certificate, the call's encryption, the peer's key

certificate-changed = The certificate of {$server} changed since you last connected. Someone may be intercepting the connection, so Pinhole did not connect and sent nothing. If the server's operator replaced the certificate, check the new fingerprint with them, then trust it.
trusted-until-now = Trusted until now:
presented-now = Presented now:
fingerprint-hint = The fingerprint of the server's certificate, sha256:…, as its operator publishes it (pinhole-rendezvous prints it when it starts). Pinhole then talks to that server only. Empty: the certificate the server presents on the first connection is remembered and must stay the same.
trust-new-certificate = Trust the new certificate
certificate-not-saved = The new certificate could not be saved: {$error}
encrypted = Encrypted end to end ({$suite})
compare-with = Compare with {$peer}:
compare-hint = {$peer} sees the same digits if nobody is in the middle. Read them to each other once to be sure.
key-changed = {$peer}'s key changed since your last call. Compare the code below with {$peer} before saying anything private: if the digits differ, someone is listening in. If they match ({$peer} may have a new computer or reinstalled Pinhole), trust the new key.
trust-new-key = Trust the new key
key-trusted = You trust {$peer}'s new key from now on.
key-not-trusted = {$peer}'s new key could not be saved: {$error}
contacts-unreadable = Your contacts' keys could not be read, so changed keys cannot be noticed until it is fixed: {$detail}
no-code-for-echo = The echo service has no code to compare.
codes-match = The codes match: mark {$peer} as verified
codes-match-hint = Press this only after you and they read the same digits to each other. Pinhole then marks them verified, until their key changes.
verified = Verified: you compared the code with {$peer} for this key.
verified-mark = ✔ verified

## Sound processing and the echo test

processing-heading = Microphone sound (from the next call)
echo-cancellation = Echo cancellation
echo-cancellation-hint = Keeps the other side from hearing themselves when your microphone picks up your speakers. Turn it off only with headphones.
noise-suppression = Noise suppression
noise-suppression-hint = Removes steady background noise (fans, hum, rumble) from what you send.
gain-control = Automatic gain
gain-control-hint = Brings a quiet or loud microphone to a steady speaking level.
voice-came-back = Your voice came back after {$ms} ms
push-to-talk-hint = Push to talk: hold Space to speak.
echo-measuring = Say something: the time your voice takes to come back is measured as you speak.
echo-latency-parts = From microphone to speaker: {$capture} ms in the microphone's buffers, {$path} ms through the call (the frame, the codec, the network to the server and back, the jitter buffer), {$playback} ms in the speaker's buffers.

## Calls that cannot be placed

cannot-call-connecting = Cannot call {$peer} yet: still connecting to the server.
cannot-call-offline = Cannot call {$peer} now: the server was lost and the app is reaching it again.
cannot-call-replaced = Cannot call {$peer}: {$why} Press "{sign-in-again}" first.
cannot-call = Cannot call {$peer}: {$why}
bad-name = Cannot call {$peer}: {$why}.
name-empty = enter a name others can call you by
name-too-long = a name has at most 32 characters
name-character = a name has only letters, digits, '.', '_' and '-', not {$char}
name-echo = "echo" is the server's echo service; choose another name
address-empty = Enter the server's address, such as example.org or 203.0.113.7:3478
address-port = The port must be a number from 1 to 65535, not {$port}
address-ipv6 = An IPv6 address goes in brackets, such as [2001:db8::1]:3478
address-host = {$host} is not a host name or IP address
server-entry-problem = Server {$position} of {$count}, {$entry}: {$problem}

## How long ago

ago-just-now = just now
ago-minutes = {$n} min ago
ago-hours = {$n} h ago
ago-yesterday = yesterday
ago-days = {$n} days ago

## Invite links

invite-heading-echo = A link to the echo service
invite-heading = {$name} invites you
invite-question-echo = Call echo (you hear yourself) through this server?
invite-question = Call {$name} through this server?
invite-same-server = the server you use already
invite-instead-of-builtin = instead of the server built into this app
invite-instead-of = instead of {$server}
invite-no-fingerprint = not in the link: checked as for any server (a certificate signed by an authority, else the one it presents the first time is remembered)
invite-fingerprint-pins = Pinhole will talk to this server only with this certificate.
invite-certificate-differs = This link gives another certificate for {$server} than the one you trusted until now. Use it only if the link came from someone you trust: a wrong one would let someone else's server stand in for {$server}.
in-the-link = In the link:
use-invite = Use this server and call
call-after-setup = Once you have told Pinhole your name and saved, it calls {$peer}.
call-when-connected = Calling {$peer} once connected to the server…
invite-not-used = The invite's server was not taken: {$why}
copy-invite = Copy invite link
copy-invite-hint = Send this link to someone: opening it in Pinhole sets their server (and its certificate) to yours and calls you.
invite-copied = Copied
invite-link = Invite link
invite-server = Server
invite-certificate = Certificate
cancel = Cancel

## Desktop notifications

notify-open = Open Pinhole
notify-call-back = Call back
notify-calling = {$peer} is calling.
notify-calling-summary = {$peer} is calling
notify-missed = Missed call
notify-missed-from = Missed call from {$peer}
notify-someone = Someone

## The tray icon

tray-connecting = Connecting…
tray-online = Online: calls can come in
tray-offline = Offline: {$why}
tray-ringing = {$peer} is calling
tray-in-call = In a call with {$peer}
tray-open = Open Pinhole
tray-quit = Quit
tray-server-lost = the server was lost
tray-replaced = signed in on another device
tray-unreachable = the server cannot be reached

## The incoming call

incoming-call = Incoming call
connecting = Connecting…
accept = Accept
reject = Reject
accept-hint = Accept the call
reject-hint = Reject the call

## The first start

welcome = Welcome to Pinhole
welcome-what = Pinhole calls people straight through their routers. Tell it who you are.
welcome-server = Leave the server empty to use the one built into this app: call echo to hear yourself.
save-and-start = Save and start
save-and-start-hint = Keep these settings and go online

## The settings view

settings = Settings
save = Save
save-hint = Keep these settings
cancel-hint = Forget the changes
theme = Theme
theme-system = As the desktop
theme-light = Light
theme-dark = Dark
push-to-talk = Push to talk
push-to-talk-what = microphone on only while Space is held
microphone-level = Microphone level
level-off = off
play-test-sound = Play test sound
playing-tone = Playing a 440 Hz tone…
test-connection = Test connection
server = Server
server-empty = empty: built-in server
server-hint = One server (host or host:port), or several separated by commas, such as a.example.org, b.example.org:3479. The app signs in with the first that answers and moves to the next at once when its server fails or shuts down.
server-certificate = Server certificate
server-certificate-empty = empty: trust on first use
your-name = Your name
your-name-hint = e.g. alice or bob
microphone = Microphone
speaker = Speaker
advanced = Advanced
frame-length = Frame length
bitrate = Bitrate (kbit/s)
keepalive = Keepalive (s)
keepalive-empty = empty: every 15 s
udp-port = UDP port
udp-port-empty = empty: any free port
port-mapping = Port mapping
port-mapping-what = ask the router (UPnP, NAT-PMP, PCP)
builtin-server = Built-in server
builtin-server-what = reachable from the local network
bad-bitrate = bitrate is a number from 6 to 510 kbit/s
bad-udp-port = the UDP port is empty (any free port) or a number from 1 to 65535
bad-keepalive = keepalive is empty (every 15 s) or 1 to 300 seconds
device-missing = {$device} (missing)
system-default = System default

## The main view

you-are = You are {$name}
settings-hint = Server, name, devices and more
try-again-now = Try again now
checking-network = Checking your network…
name-to-call = Name to call
name-to-call-hint = a name, or echo to hear yourself
call-hint = Call the name typed
call = Call
add-contact = Add contact
contacts = Contacts
no-contacts = Nobody yet: type a name above and press Add contact.
call-name = Call {$name}
remove = remove
remove-hint = Remove from contacts
recent-calls = Recent calls
no-calls = No calls yet.
way-outgoing = outgoing
way-incoming = incoming

## The call view

calling = Calling
stop-calling-hint = Stop calling
in-a-call-with = In a call with
volume = Volume
mute = Mute microphone
mute-hint = Switch the microphone off
unmute = Unmute microphone
unmute-hint = Switch the microphone on
hang-up = Hang up (Esc)
hang-up-hint = End the call
measuring = Measuring…
measuring-lower = measuring…
loss-packets = {$pct} % ({$lost} of {$expected} packets)
quality-good = Good
quality-choppy = Choppy: your network is losing {$percent} % of their voice
quality-weak = Their connection is weak: they lose {$percent} % of your voice
quality-delayed = Delayed: {$ms} ms there and back; leave pauses to talk
stat-quality = Quality
stat-path = Path
stat-round-trip = Round trip
stat-jitter = Jitter
stat-first-audio = Time to first audio
stat-loss = Loss
