# Pinholes Texte auf Deutsch. Jede Meldung aus en/pinhole.ftl steht hier mit derselben Kennung
# und denselben $Namen; fehlt eine, zeigt die App den englischen Text. Ein Server steht als
# $server im Dativ („mit dem Server“) und als $subject im Nominativ („Der Server ist voll“).

## Wie ein Anruf endete

call-ended-after = Anruf mit {$peer} nach {$took} beendet.
call-ended-after-because = Anruf mit {$peer} nach {$took} beendet: {$why}
missed-call = Sie haben einen Anruf von {$peer} verpasst.
call-ended = Anruf mit {$peer} beendet.
call-from-cancelled = Der Anruf von {$peer} wurde abgebrochen.
peer-hung-up = {$peer} hat aufgelegt.
call-to-cancelled = Der Anruf an {$peer} wurde abgebrochen.
peer-gave-up = {$peer} hat aufgelegt, bevor Sie angenommen haben.
peer-declined = {$peer} hat den Anruf abgelehnt.
peer-busy = {$peer} ist gerade in einem anderen Gespräch.
peer-offline = {$peer} ist gerade nicht online.
peer-no-answer = {$peer} hat nicht abgenommen.
you-no-answer = Sie haben den Anruf von {$peer} nicht rechtzeitig angenommen.
peer-lost = Die Verbindung zu {$peer} ist abgebrochen.
server-dropped-call = Der Server hat den Anruf abgebrochen.
relay-limit = Der Server wollte den Anruf nicht weiterleiten (er leitet nur einen Anruf pro Person weiter).
call-server-lost = Die Verbindung zum Server ist verloren gegangen, und der Anruf mit {$peer} war auf ihn angewiesen.
call-server-shut-down = Der Server wurde heruntergefahren (ein Neustart), und der Anruf mit {$peer} lief über ihn.
call-server-unreachable = {$peer} kann nicht angerufen werden: Der Server ist gerade nicht erreichbar.
peer-silent = Von {$peer} kam 5 Sekunden lang nichts an: Die Verbindung ist abgebrochen.
self-call = Das sind Sie selbst: Rufen Sie jemand anderen an, oder „echo“, um sich selbst zu hören.
call-failed-locally = Der Anruf ist auf diesem Computer gescheitert (an einem Audiogerät oder am Netzwerk).
call-insecure = Der Anruf mit {$peer} wurde beendet: Seine Schlüssel haben die Prüfung nicht bestanden, daher wäre er nicht vertraulich gewesen (möglicherweise greift jemand zwischen Ihnen ein).
cancelled-by-you = Sie haben den Anruf an {$peer} abgebrochen.
declined-by-you = Sie haben den Anruf von {$peer} abgelehnt.
call-failed = Der Anruf mit {$peer} ist gescheitert: {$why}

## Ergebnisse in der Liste der letzten Anrufe

outcome-ended = beendet
outcome-cancelled = abgebrochen
outcome-declined = abgelehnt
outcome-busy = besetzt
outcome-offline = offline
outcome-no-answer = keine Antwort
outcome-connection-lost = Verbindung verloren
outcome-server-error = Serverfehler
outcome-server-lost = Server verloren
outcome-server-restart = Serverneustart
outcome-no-server = kein Server
outcome-that-is-you = Sie selbst
outcome-failed = gescheitert
outcome-not-private = nicht vertraulich
outcome-hung-up = aufgelegt
outcome-missed = verpasst

## Audiogeräte

microphone-not-opened = Kein Mikrofon ließ sich öffnen ({$detail}). Wählen Sie in den Einstellungen ein anderes.
speaker-not-opened = Kein Lautsprecher ließ sich öffnen ({$detail}). Wählen Sie in den Einstellungen einen anderen.
microphone-failed-in-call = Das Mikrofon ist ausgefallen ({$detail}): Die Gegenseite hört Sie nicht.
speaker-failed-in-call = Der Lautsprecher ist ausgefallen ({$detail}): Sie hören die Gegenseite nicht.
microphone-unplugged = Ihr Mikrofon {$from} wurde ausgesteckt; jetzt wird {$to} verwendet.
speaker-unplugged = Ihr Lautsprecher {$from} wurde ausgesteckt; jetzt wird {$to} verwendet.
microphone-stopped = Ihr Mikrofon {$from} funktioniert nicht mehr ({$why}); jetzt wird {$to} verwendet.
speaker-stopped = Ihr Lautsprecher {$from} funktioniert nicht mehr ({$why}); jetzt wird {$to} verwendet.

refused = Der Server hat abgelehnt: {$message}
engine-not-running = Die Anrufsteuerung läuft nicht.

## Statuszeilen der Hauptansicht

server-line = Server: {$server}
server-builtin-local = Server: in diese App eingebaut (nur dieser Rechner)
server-builtin-lan = Server: in diese App eingebaut (dieser Rechner und das lokale Netzwerk)
lan-hint = Andere in Ihrem Netzwerk stellen als Server {$addresses} ein
nat-registered = Verbindung in Ordnung: beim Server angemeldet.
nat-answered = Verbindung in Ordnung: Der Server hat geantwortet (die Prüfung dauerte {$ms} ms).
nat-network = Netzwerk: {$nat} ({$verdict})
nat-public = Öffentliche Adresse: kein NAT im Weg
nat-proxy = Öffentliche Adresse hinter einem Proxy oder einer Firewall
nat-behind = Hinter NAT: Anrufe laufen über die Portzuordnung des Routers
nat-unknown = Unbekannt
nat-mapped = Ihre Adresse, wie der Server sie sieht: {$address}
port-mapping-off = Portfreigabe am Router: nicht angefragt
port-mapping-asking = Portfreigabe am Router: Router wird gefragt …
port-mapping-mapped = Portfreigabe am Router: {$external} ({$method}): Anrufe kommen direkt herein
port-mapping-none = Portfreigabe am Router: keine ({$why})
port-mapping-released = Portfreigabe am Router: freigegeben
nat-failed = Netzwerkprüfung fehlgeschlagen: {$why}
path-direct-to = Direkt zu {$remote}
path-direct = Direkt
path-relay = Über den Server weitergeleitet
ringing = Es klingelt … {$time}
reaching = Verbindung wird aufgebaut …

## Einstellungen

settings-unreadable = Ihre Einstellungen konnten nicht gelesen werden: {$error}
settings-not-saved = Einstellungen nicht gespeichert: {$error}
key-not-saved = Ihr Schlüssel konnte nicht gespeichert werden: {$error}
no-microphone = Kein Mikrofon: {$why}
test-sound-played = Abgespielt: Haben Sie ihn gehört?
no-sound = Kein Ton: {$why}

## Die Anmeldezeile

connecting-to = Verbinde mit {$server} …
online = Online: angemeldet bei {$server}
the-server = dem Server
the-server-subject = Der Server
server-restarting-now = Der Server startet neu; Sie werden jetzt wieder angemeldet.
server-restarting-in = Der Server startet neu; erneute Anmeldung in {$seconds} s.
loss-closed = er hat die Verbindung geschlossen
loss-not-answering = er antwortet nicht mehr
loss-shutting-down = er wird heruntergefahren
lost-server-now = Verbindung zum Server verloren ({$why}); neuer Versuch jetzt.
lost-server-in = Verbindung zum Server verloren ({$why}); neuer Versuch in {$seconds} s.
replaced = {$name} hat sich auf einem anderen Gerät angemeldet.
sign-in-again = Hier wieder anmelden
retry-in = Neuer Versuch in {$seconds} s.
engine-stopped = Nicht verbunden mit {$server}: Die Anrufsteuerung wurde beendet.
not-connected = Nicht verbunden mit {$server}: {$why}
server-unreachable = {$subject} ist nicht erreichbar: {$detail}
name-taken = Ihr Name ist auf {$server} vergeben: Jemand anderes hat ihn zuerst angemeldet. Wählen Sie in den Einstellungen einen anderen Namen.
name-confusable = Ihr Name ähnelt zu sehr einem Namen, den jemand anderes auf {$server} angemeldet hat (dieselben Buchstaben aus einem anderen Alphabet, oder I und l): Man könnte die beiden verwechseln. Wählen Sie in den Einstellungen einen anderen Namen.
too-many-names = Ihr Schlüssel hat bereits so viele Namen, wie auf {$server} für eine Person erlaubt sind. Verwenden Sie einen Ihrer Namen oder einen anderen Server.
name-not-accepted = {$subject} akzeptiert Ihren Namen nicht. Wählen Sie in den Einstellungen einen anderen Namen.
bad-signature = {$subject} hat die Signatur Ihres Schlüssels für Ihren Namen nicht akzeptiert. Wählen Sie in den Einstellungen einen anderen Namen.
server-full = {$subject} ist voll: Gerade ist kein Platz für weitere Personen.
incompatible = {$subject} bietet keinen Anrufdienst für diese App ({$detail}): Stellen Sie in den Einstellungen einen Server ein, der ihn hat.
local-failure = Pinhole konnte auf diesem Computer nicht laufen: {$detail}

## Sicherheit: das Zertifikat des Servers, die Verschlüsselung, der Schlüssel der Gegenseite

certificate-changed = Das Zertifikat von {$server} hat sich seit Ihrer letzten Verbindung geändert. Möglicherweise fängt jemand die Verbindung ab, daher hat Pinhole sich nicht verbunden und nichts gesendet. Falls der Betreiber des Servers das Zertifikat ersetzt hat, prüfen Sie den neuen Fingerabdruck mit ihm und vertrauen Sie ihm dann.
trusted-until-now = Bisher vertraut:
presented-now = Jetzt vorgelegt:
fingerprint-hint = Der Fingerabdruck des Serverzertifikats, sha256:…, wie sein Betreiber ihn veröffentlicht (pinhole-rendezvous gibt ihn beim Start aus). Pinhole spricht dann nur mit diesem Server. Leer: Das Zertifikat, das der Server bei der ersten Verbindung vorlegt, wird gespeichert und darf sich nicht ändern.
trust-new-certificate = Dem neuen Zertifikat vertrauen
certificate-not-saved = Das neue Zertifikat konnte nicht gespeichert werden: {$error}
encrypted = Ende-zu-Ende-verschlüsselt ({$suite})
compare-with = Mit {$peer} vergleichen:
compare-hint = {$peer} sieht dieselben Ziffern, wenn niemand dazwischen sitzt. Lesen Sie sie einander einmal vor, um sicherzugehen.
key-changed = Der Schlüssel von {$peer} hat sich seit Ihrem letzten Anruf geändert. Vergleichen Sie den Code unten mit {$peer}, bevor Sie etwas Vertrauliches sagen: Wenn die Ziffern abweichen, hört jemand mit. Wenn sie übereinstimmen ({$peer} hat vielleicht einen neuen Computer oder Pinhole neu installiert), vertrauen Sie dem neuen Schlüssel.
trust-new-key = Dem neuen Schlüssel vertrauen
key-trusted = Sie vertrauen ab jetzt dem neuen Schlüssel von {$peer}.
key-not-trusted = Der neue Schlüssel von {$peer} konnte nicht gespeichert werden: {$error}
contacts-unreadable = Die Schlüssel Ihrer Kontakte konnten nicht gelesen werden, daher fallen geänderte Schlüssel erst auf, wenn das behoben ist: {$detail}
no-code-for-echo = Der Echo-Dienst hat keinen Code zum Vergleichen.
codes-match = Die Codes stimmen überein: {$peer} als verifiziert markieren
codes-match-hint = Drücken Sie dies erst, nachdem Sie einander dieselben Ziffern vorgelesen haben. Pinhole markiert die Person dann als verifiziert, bis sich ihr Schlüssel ändert.
verified = Verifiziert: Sie haben den Code für diesen Schlüssel mit {$peer} verglichen.
verified-mark = ✔ verifiziert

## Tonverarbeitung und Echotest

processing-heading = Mikrofonton (ab dem nächsten Anruf)
echo-cancellation = Echounterdrückung
echo-cancellation-hint = Verhindert, dass die Gegenseite sich selbst hört, wenn Ihr Mikrofon Ihre Lautsprecher aufnimmt. Schalten Sie sie nur mit Kopfhörern aus.
noise-suppression = Rauschunterdrückung
noise-suppression-hint = Entfernt gleichmäßige Hintergrundgeräusche (Lüfter, Brummen, Rumpeln) aus dem, was Sie senden.
gain-control = Automatische Lautstärke
gain-control-hint = Bringt ein leises oder lautes Mikrofon auf eine gleichmäßige Sprechlautstärke.
voice-came-back = Ihre Stimme kam nach {$ms} ms zurück
push-to-talk-hint = Sprechtaste: Halten Sie die Leertaste gedrückt, um zu sprechen.
echo-measuring = Sagen Sie etwas: Die Zeit, bis Ihre Stimme zurückkommt, wird gemessen, während Sie sprechen.
echo-latency-parts = Vom Mikrofon zum Lautsprecher: {$capture} ms in den Puffern des Mikrofons, {$path} ms im Anruf (der Rahmen, der Codec, das Netzwerk zum Server und zurück, der Jitterpuffer), {$playback} ms in den Puffern des Lautsprechers.

## Anrufe, die nicht möglich sind

cannot-call-connecting = {$peer} kann noch nicht angerufen werden: Die Verbindung zum Server wird noch aufgebaut.
cannot-call-offline = {$peer} kann gerade nicht angerufen werden: Die Verbindung zum Server ist verloren, und die App baut sie wieder auf.
cannot-call-replaced = {$peer} kann nicht angerufen werden: {$why} Drücken Sie zuerst „{sign-in-again}“.
cannot-call = {$peer} kann nicht angerufen werden: {$why}
bad-name = {$peer} kann nicht angerufen werden: {$why}.
name-empty = geben Sie einen Namen ein, unter dem andere Sie anrufen
name-too-long = ein Name hat höchstens 32 Zeichen
name-character = ein Name besteht nur aus Buchstaben, Ziffern, '.', '_' und '-', nicht {$char}
name-echo = „echo“ ist der Echodienst des Servers; wählen Sie einen anderen Namen
address-empty = Geben Sie die Adresse des Servers ein, etwa example.org oder 203.0.113.7:3478
address-port = Der Port ist eine Zahl von 1 bis 65535, nicht {$port}
address-ipv6 = Eine IPv6-Adresse steht in eckigen Klammern, etwa [2001:db8::1]:3478
address-host = {$host} ist kein Hostname und keine IP-Adresse
server-entry-problem = Server {$position} von {$count}, {$entry}: {$problem}

## Wie lange her

ago-just-now = gerade eben
ago-minutes = vor {$n} Min.
ago-hours = vor {$n} Std.
ago-yesterday = gestern
ago-days = vor {$n} Tagen

## Einladungslinks

invite-heading-echo = Ein Link zum Echo-Dienst
invite-heading = {$name} lädt Sie ein
invite-question-echo = Echo (Sie hören sich selbst) über diesen Server anrufen?
invite-question = {$name} über diesen Server anrufen?
invite-same-server = der Server, den Sie schon verwenden
invite-instead-of-builtin = statt des in diese App eingebauten Servers
invite-instead-of = statt {$server}
invite-no-fingerprint = nicht im Link: wird wie bei jedem Server geprüft (ein von einer Zertifizierungsstelle signiertes Zertifikat, sonst wird das beim ersten Mal vorgelegte gespeichert)
invite-fingerprint-pins = Pinhole spricht mit diesem Server nur mit diesem Zertifikat.
invite-certificate-differs = Dieser Link nennt für {$server} ein anderes Zertifikat als das, dem Sie bisher vertraut haben. Verwenden Sie ihn nur, wenn er von jemandem kommt, dem Sie vertrauen: Ein falsches Zertifikat ließe den Server eines anderen an die Stelle von {$server} treten.
in-the-link = Im Link:
use-invite = Diesen Server verwenden und anrufen
call-after-setup = Sobald Sie Pinhole Ihren Namen genannt und gespeichert haben, ruft es {$peer} an.
call-when-connected = {$peer} wird angerufen, sobald die Verbindung zum Server steht …
invite-not-used = Der Server der Einladung wurde nicht übernommen: {$why}
copy-invite = Einladungslink kopieren
copy-invite-hint = Schicken Sie diesen Link jemandem: Wer ihn in Pinhole öffnet, stellt Ihren Server (und sein Zertifikat) ein und ruft Sie an.
invite-copied = Kopiert
invite-link = Einladungslink
invite-server = Server
invite-certificate = Zertifikat
cancel = Abbrechen

## Desktop-Benachrichtigungen

notify-open = Pinhole öffnen
notify-call-back = Zurückrufen
notify-calling = {$peer} ruft an.
notify-calling-summary = {$peer} ruft an
notify-missed = Verpasster Anruf
notify-missed-from = Verpasster Anruf von {$peer}
notify-someone = Jemand

## Das Symbol im Systembereich

tray-connecting = Verbinde …
tray-online = Online: Anrufe können ankommen
tray-offline = Offline: {$why}
tray-ringing = {$peer} ruft an
tray-in-call = Im Gespräch mit {$peer}
tray-open = Pinhole öffnen
tray-quit = Beenden
tray-server-lost = die Verbindung zum Server ist verloren
tray-replaced = an einem anderen Gerät angemeldet
tray-unreachable = der Server ist nicht erreichbar

## Eingehender Anruf

incoming-call = Eingehender Anruf
connecting = Verbinde …
accept = Annehmen
reject = Ablehnen
accept-hint = Anruf annehmen
reject-hint = Anruf ablehnen

## Der erste Start

welcome = Willkommen bei Pinhole
welcome-what = Pinhole verbindet Anrufe direkt durch die Router hindurch. Sagen Sie ihm, wer Sie sind.
welcome-server = Lassen Sie den Server leer, um den in diese App eingebauten zu verwenden: Rufen Sie „echo“ an, um sich selbst zu hören.
save-and-start = Speichern und starten
save-and-start-hint = Diese Einstellungen behalten und online gehen

## Die Einstellungen

settings = Einstellungen
save = Speichern
save-hint = Diese Einstellungen behalten
cancel-hint = Die Änderungen verwerfen
theme = Erscheinungsbild
theme-system = Wie der Desktop
theme-light = Hell
theme-dark = Dunkel
push-to-talk = Sprechtaste
push-to-talk-what = Mikrofon nur an, solange die Leertaste gedrückt ist
microphone-level = Mikrofonpegel
level-off = aus
play-test-sound = Testton abspielen
playing-tone = Ein 440-Hz-Ton wird abgespielt …
test-connection = Verbindung testen
server = Server
server-empty = leer: eingebauter Server
server-hint = Ein Server (Host oder Host:Port) oder mehrere, durch Kommas getrennt, etwa a.example.org, b.example.org:3479. Die App meldet sich beim ersten an, der antwortet, und wechselt sofort zum nächsten, wenn ihr Server ausfällt oder herunterfährt.
server-certificate = Serverzertifikat
server-certificate-empty = leer: dem ersten vertrauen
your-name = Ihr Name
your-name-hint = Ihr Rufname, z. B. alice
microphone = Mikrofon
speaker = Lautsprecher
advanced = Erweitert
frame-length = Rahmenlänge
bitrate = Bitrate (kbit/s)
keepalive = Keepalive (s)
keepalive-empty = leer: alle 15 s
udp-port = UDP-Port
udp-port-empty = leer: ein beliebiger freier Port
port-mapping = Portfreigabe
port-mapping-what = den Router fragen (UPnP, NAT-PMP, PCP)
builtin-server = Eingebauter Server
builtin-server-what = aus dem lokalen Netzwerk erreichbar
bad-bitrate = Die Bitrate ist eine Zahl von 6 bis 510 kbit/s
bad-udp-port = Der UDP-Port ist leer (ein beliebiger freier Port) oder eine Zahl von 1 bis 65535
bad-keepalive = Keepalive ist leer (alle 15 s) oder 1 bis 300 Sekunden
device-missing = {$device} (fehlt)
system-default = Systemstandard

## Die Hauptansicht

you-are = Sie sind {$name}
settings-hint = Server, Name, Geräte und mehr
try-again-now = Jetzt erneut versuchen
checking-network = Netzwerk wird geprüft …
name-to-call = Wen anrufen?
name-to-call-hint = ein Name, oder echo, um sich selbst zu hören
call-hint = Den eingegebenen Namen anrufen
call = Anrufen
add-contact = Zu Kontakten
contacts = Kontakte
no-contacts = Noch niemand: Geben Sie oben einen Namen ein und drücken Sie „Zu Kontakten“.
call-name = {$name} anrufen
remove = entfernen
remove-hint = Aus den Kontakten entfernen
recent-calls = Letzte Anrufe
no-calls = Noch keine Anrufe.
way-outgoing = ausgehend
way-incoming = eingehend

## Die Anrufansicht

calling = Anruf an
stop-calling-hint = Anruf abbrechen
in-a-call-with = Im Gespräch mit
volume = Lautstärke
mute = Stummschalten
mute-hint = Das Mikrofon ausschalten
unmute = Stummschaltung aufheben
unmute-hint = Das Mikrofon einschalten
hang-up = Auflegen (Esc)
hang-up-hint = Den Anruf beenden
measuring = Wird gemessen …
measuring-lower = wird gemessen …
loss-packets = {$pct} % ({$lost} von {$expected} Paketen)
quality-good = Gut
quality-choppy = Abgehackt: Ihr Netzwerk verliert {$percent} % der Stimme der Gegenseite
quality-weak = Die Verbindung der Gegenseite ist schwach: Dort gehen {$percent} % Ihrer Stimme verloren
quality-delayed = Verzögert: {$ms} ms hin und zurück; lassen Sie Pausen zum Sprechen
stat-quality = Qualität
stat-path = Weg
stat-round-trip = Umlaufzeit
stat-jitter = Jitter
stat-first-audio = Zeit bis zum ersten Ton
stat-loss = Verlust
