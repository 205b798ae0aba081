//! The tray icon (`pinhole::ui::tray`) as a desktop's tray host sees it, on a private session
//! bus: a fake `org.kde.StatusNotifierWatcher` takes the item's registration, then the test
//! reads the item's properties (status, tooltip, icon) and uses it as a panel would: a click on
//! the icon, "Quit" from its menu (`com.canonical.dbusmenu`).
//!
//! The tray connects to the session bus the environment names, so it runs in a child process
//! (this test binary again, its ignored `child_tray` test) with `DBUS_SESSION_BUS_ADDRESS`
//! pointing at the test's bus; the child says what it was asked on its stdout and takes state
//! changes on its stdin. Needs `dbus-daemon` (scripts/packages/desktop.txt).

#![allow(clippy::unwrap_used)]

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Write};
use std::process::{Command, Stdio};
use std::sync::{Arc, mpsc};
use std::time::{Duration, Instant};

use pinhole::ui::tray::{Tray, TrayState};
use pinhole_tests::dbus::Bus;
use zbus::zvariant::{OwnedValue, Value};

const WAIT: Duration = Duration::from_secs(5);
const CHILD: &str = "PINHOLE_TRAY_CHILD";

/// The fake watcher: records each item that registers.
struct Watcher {
    registered: mpsc::Sender<String>,
}

#[zbus::interface(name = "org.kde.StatusNotifierWatcher")]
impl Watcher {
    fn register_status_notifier_item(
        &self,
        service: String,
        #[zbus(header)] header: zbus::message::Header<'_>,
    ) {
        // An item registers with its bus name, or with its object path (then its sender is it).
        let name = if service.starts_with('/') {
            header.sender().map(|s| s.to_string()).unwrap_or_default()
        } else {
            service
        };
        let _ = self.registered.send(name);
    }

    fn register_status_notifier_host(&self, _service: String) {}

    #[zbus(property)]
    fn is_status_notifier_host_registered(&self) -> bool {
        true
    }

    #[zbus(property)]
    fn protocol_version(&self) -> i32 {
        0
    }

    #[zbus(property)]
    fn registered_status_notifier_items(&self) -> Vec<String> {
        Vec::new()
    }
}

type ToolTip = (String, Vec<(i32, i32, Vec<u8>)>, String, String);

/// A property of the item, read again (not from the proxy's cache).
fn property<T>(item: &zbus::Proxy<'_>, name: &str) -> T
where
    T: TryFrom<OwnedValue>,
    <T as TryFrom<OwnedValue>>::Error: Into<zbus::Error>,
{
    async_io::block_on(item.get_property::<T>(name)).unwrap_or_else(|e| panic!("{name}: {e}"))
}

/// Calls `method` on `proxy` and waits for its answer.
fn call<R>(
    proxy: &zbus::Proxy<'_>,
    method: &str,
    args: &(impl serde::Serialize + zbus::zvariant::DynamicType),
) -> R
where
    R: for<'d> zbus::zvariant::DynamicDeserialize<'d>,
{
    async_io::block_on(proxy.call(method, args)).unwrap_or_else(|e| panic!("{method}: {e}"))
}

/// A proxy without a property cache, so each read asks the item.
fn proxy<'a>(
    conn: &zbus::Connection,
    service: &'a str,
    path: &'a str,
    interface: &'a str,
) -> zbus::Proxy<'a> {
    async_io::block_on(
        zbus::proxy::Builder::new(conn)
            .destination(service)
            .unwrap()
            .path(path)
            .unwrap()
            .interface(interface)
            .unwrap()
            .cache_properties(zbus::proxy::CacheProperties::No)
            .build(),
    )
    .unwrap()
}

/// Waits until `done` holds for the item (properties are read again each time).
fn wait_for(what: &str, done: impl Fn() -> bool) {
    let deadline = Instant::now() + WAIT;
    while !done() {
        assert!(Instant::now() < deadline, "{what}: not within {WAIT:?}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The id of the menu item labelled `label`, from the menu's layout.
fn menu_item(menu: &zbus::Proxy<'_>, label: &str) -> i32 {
    type Layout = (i32, HashMap<String, OwnedValue>, Vec<OwnedValue>);
    let (_revision, root): (u32, Layout) =
        call(menu, "GetLayout", &(0i32, -1i32, Vec::<String>::new()));
    let mut labels = Vec::new();
    for child in root.2 {
        let (id, props, _): Layout = child.try_into().unwrap();
        let text = props
            .get("label")
            .and_then(|v| String::try_from(v.try_clone().unwrap()).ok())
            .unwrap_or_default();
        if text == label {
            return id;
        }
        labels.push(text);
    }
    panic!("no {label:?} in the menu: {labels:?}");
}

#[test]
fn the_tray_icon_says_the_state_and_its_menu_works() {
    let Some(bus) = Bus::start() else { return };
    let (registered, items) = mpsc::channel();
    let _watcher = async_io::block_on(
        zbus::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .name("org.kde.StatusNotifierWatcher")
            .unwrap()
            .serve_at("/StatusNotifierWatcher", Watcher { registered })
            .unwrap()
            .build(),
    )
    .unwrap();

    let mut child = Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "child_tray",
            "--ignored",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(CHILD, "1")
        .env("DBUS_SESSION_BUS_ADDRESS", &bus.address)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .unwrap();
    let mut to_child = child.stdin.take().unwrap();
    let (said_tx, said) = mpsc::channel();
    let stdout = child.stdout.take().unwrap();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            let _ = said_tx.send(line);
        }
    });
    let expect_said = |want: &str| loop {
        match said.recv_timeout(WAIT) {
            // The harness prints "test child_tray ... " before the first line.
            Ok(line) if line.ends_with(want) => return,
            Ok(_) => {}
            Err(e) => panic!("the tray child did not say {want:?}: {e}"),
        }
    };

    let service = items.recv_timeout(WAIT).expect("the tray registered");
    let conn = async_io::block_on(
        zbus::connection::Builder::address(bus.address.as_str())
            .unwrap()
            .build(),
    )
    .unwrap();
    let item = proxy(
        &conn,
        &service,
        "/StatusNotifierItem",
        "org.kde.StatusNotifierItem",
    );
    assert_eq!(property::<String>(&item, "Title"), "Pinhole");
    assert_eq!(property::<String>(&item, "Category"), "Communications");
    let icons: Vec<(i32, i32, Vec<u8>)> = property(&item, "IconPixmap");
    assert_eq!(icons, [(1, 1, vec![255, 255, 0, 0])], "one ARGB pixel, red");
    wait_for("Online in the tooltip", || {
        let tip: ToolTip = property(&item, "ToolTip");
        tip.2 == "Pinhole" && tip.3 == "Online: calls can come in"
    });
    assert_eq!(property::<String>(&item, "Status"), "Active");

    // A call rings: the icon asks for attention and names the caller.
    writeln!(to_child, "ringing").unwrap();
    wait_for("NeedsAttention while ringing", || {
        property::<String>(&item, "Status") == "NeedsAttention"
    });
    let tip: ToolTip = property(&item, "ToolTip");
    assert_eq!(tip.3, "bob is calling");

    // A click on the icon opens the window; Quit in its menu quits.
    let () = call(&item, "Activate", &(0i32, 0i32));
    expect_said("ACTION Open");
    let menu_path: zbus::zvariant::OwnedObjectPath = property(&item, "Menu");
    let menu = proxy(
        &conn,
        &service,
        menu_path.as_str(),
        "com.canonical.dbusmenu",
    );
    let quit = menu_item(&menu, "Quit");
    let () = call(&menu, "Event", &(quit, "clicked", Value::from(0i32), 0u32));
    expect_said("ACTION Quit");

    writeln!(to_child, "exit").unwrap();
    let deadline = Instant::now() + WAIT;
    let status = loop {
        if let Some(status) = child.try_wait().unwrap() {
            break status;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            panic!("the tray child did not exit");
        }
        std::thread::sleep(Duration::from_millis(20));
    };
    assert!(status.success(), "{status}");
}

/// The tray, in the child process the test above starts (it does nothing run any other way).
#[test]
#[ignore = "the child of the_tray_icon_says_the_state_and_its_menu_works"]
fn child_tray() {
    if std::env::var_os(CHILD).is_none() {
        return;
    }
    let mut tray = Tray::start(Some((1, vec![255, 0, 0, 255])), Arc::new(|| {}));
    tray.show(TrayState::Online);
    let (lines_tx, lines) = mpsc::channel();
    std::thread::spawn(move || {
        for line in std::io::stdin().lines().map_while(Result::ok) {
            let _ = lines_tx.send(line);
        }
    });
    loop {
        while let Some(action) = tray.poll() {
            println!("ACTION {action:?}");
            std::io::stdout().flush().unwrap();
        }
        match lines.recv_timeout(Duration::from_millis(20)) {
            Ok(line) if line == "ringing" => tray.show(TrayState::Ringing("bob".into())),
            Ok(line) if line == "exit" => return,
            Err(mpsc::RecvTimeoutError::Disconnected) => return,
            _ => {}
        }
    }
}
