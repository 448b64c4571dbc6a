//! End-to-end tests against the vcsim test bed (testbed/vcsim), started per test on a free port.
//!
//! The binary comes from `$AM_VCSIM_BIN`, or is built with Go into `target/vcsim/` on first use.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::time::Duration;

use support::Vcsim;
use vsphere_soap::{
    Client, CloneSpec, Credentials, Error, EventFilter, FaultKind, HostConnectSpec, MoRef, MovePriority,
    ObjectContent, ObjectUpdateKind, Password, PostedEvent, PostedEventKind, PropertyFilterSpec,
    PropertySpec, TlsMode, TransportErrorKind,
};

const T: Duration = Duration::from_secs(30);

const VM_PROPS: &[&str] = &[
    "name",
    "runtime.connectionState",
    "runtime.powerState",
    "runtime.host",
    "summary.config.memorySizeMB",
    "summary.config.numCpu",
    "summary.config.vmPathName",
    "guest.ipAddress",
    "guest.toolsRunningStatus",
    "guestHeartbeatStatus",
    "summary.quickStats.overallCpuUsage",
    "summary.quickStats.guestMemoryUsage",
    "datastore",
    "snapshot",
    "resourcePool",
];

const HOST_PROPS: &[&str] = &[
    "name",
    "parent",
    "runtime.connectionState",
    "runtime.inMaintenanceMode",
    "runtime.powerState",
    "summary.hardware.numCpuCores",
    "summary.hardware.cpuMhz",
    "summary.hardware.memorySize",
    "summary.quickStats.overallCpuUsage",
    "summary.quickStats.overallMemoryUsage",
    "datastore",
    "vm",
];

async fn inventory(c: &Client) -> (Vec<ObjectContent>, Vec<ObjectContent>) {
    let all = c
        .retrieve_inventory(vec![
            PropertySpec::new("HostSystem", HOST_PROPS),
            PropertySpec::new("VirtualMachine", VM_PROPS),
        ])
        .await
        .expect("inventory");
    all.into_iter().partition(|o| o.obj.kind == "HostSystem")
}

#[tokio::test]
async fn tls_modes() {
    let sim = Vcsim::start(1, 1);
    let creds = Credentials::new("u", Password::new("p"));
    // CA file and thumbprint pinning work.
    for tls in [
        TlsMode::CaFile(sim.ca_file.clone()),
        TlsMode::Thumbprint(sim.thumbprint.parse().unwrap()),
    ] {
        let c = Client::builder(&sim.url)
            .tls(tls)
            .credentials(creds.clone())
            .connect()
            .await
            .unwrap();
        assert_eq!(c.service_content().about.api_type, "VirtualCenter");
    }
    // Insecure only when asked for by name.
    Client::builder(&sim.url)
        .tls(TlsMode::InsecureSkipVerify)
        .connect()
        .await
        .unwrap();
    // The default (system trust store) refuses the test CA.
    let err = Client::builder(&sim.url).connect().await.unwrap_err();
    assert!(
        matches!(&err, Error::Transport { source, .. } if source.kind == TransportErrorKind::Tls)
            || matches!(err, Error::Config(_)),
        "{err:?}"
    );
    // A wrong pin is refused.
    let wrong = "00".repeat(32).parse().unwrap();
    let err = Client::builder(&sim.url)
        .tls(TlsMode::Thumbprint(wrong))
        .connect()
        .await
        .unwrap_err();
    assert!(
        matches!(&err, Error::Transport { source, .. } if source.kind == TransportErrorKind::Tls),
        "{err:?}"
    );
}

#[tokio::test]
async fn inventory_with_properties() {
    let sim = Vcsim::start(3, 2);
    let c = sim.connect().await;
    let session = c.current_session().await.unwrap().expect("logged in");
    assert_eq!(session.user_name, "ha-user");
    let (hosts, vms) = inventory(&c).await;
    assert_eq!(hosts.len(), 3);
    assert_eq!(vms.len(), 6);
    for h in &hosts {
        assert_eq!(h.get_str("runtime.connectionState"), Some("connected"));
        assert!(h.get_i64("summary.hardware.numCpuCores").unwrap() > 0);
        assert!(h.get_i64("summary.hardware.memorySize").unwrap() > 0);
        assert_eq!(h.get_moref("parent").unwrap().kind, "ClusterComputeResource");
        assert!(!h.get_morefs("datastore").is_empty());
    }
    let host_refs: Vec<&MoRef> = hosts.iter().map(|h| &h.obj).collect();
    for vm in &vms {
        assert_eq!(vm.get_str("runtime.powerState"), Some("poweredOn"));
        assert!(host_refs.contains(&vm.get_moref("runtime.host").unwrap()));
        assert!(vm.get_i64("summary.config.memorySizeMB").unwrap() > 0);
        assert!(vm.get_i64("summary.config.numCpu").unwrap() > 0);
        assert_eq!(vm.get_morefs("datastore").len(), 1);
        assert!(vm.get("snapshot").is_none(), "no snapshot yet");
    }
    // The test bed agrees on which VM runs where.
    let inv = sim.inventory().await;
    let total: usize = inv
        .as_array()
        .unwrap()
        .iter()
        .map(|h| h["vms"].as_array().map_or(0, Vec::len))
        .sum();
    assert_eq!(total, 6);
}

#[tokio::test]
async fn host_not_responding_is_seen_by_watch_and_events() {
    let sim = Vcsim::start(2, 2);
    let c = sim.connect().await;
    let root = c.service_content().root_folder.clone();
    let view = c
        .create_container_view(&root, &["HostSystem", "VirtualMachine"], true)
        .await
        .unwrap();
    let spec = PropertyFilterSpec::for_container_view(
        &view,
        vec![
            PropertySpec::new("HostSystem", &["name", "runtime.connectionState"]),
            PropertySpec::new(
                "VirtualMachine",
                &["name", "runtime.connectionState", "guestHeartbeatStatus"],
            ),
        ],
    );
    let mut watch = c.watch(spec).await.unwrap();
    let first = watch
        .next(Duration::from_secs(5))
        .await
        .unwrap()
        .expect("initial state");
    assert_eq!(first.objects.len(), 6);
    assert!(first.objects.iter().all(|o| o.kind == ObjectUpdateKind::Enter));
    let host = first
        .objects
        .iter()
        .find(|o| o.obj.kind == "HostSystem")
        .unwrap()
        .obj
        .clone();

    let r = sim
        .ctl(&format!("/host/not-responding?name={}", host.value))
        .await;
    assert_eq!(r["vms"].as_u64(), Some(2));

    let mut host_seen = false;
    let mut vms_disconnected = 0;
    let deadline = tokio::time::Instant::now() + T;
    while (!host_seen || vms_disconnected < 2) && tokio::time::Instant::now() < deadline {
        let Some(set) = watch.next(Duration::from_secs(5)).await.unwrap() else {
            continue;
        };
        for o in &set.objects {
            assert_eq!(o.kind, ObjectUpdateKind::Modify);
            for ch in o.changes.iter().filter(|c| c.name == "runtime.connectionState") {
                match (o.obj.kind.as_str(), ch.val.as_ref().and_then(|v| v.as_str())) {
                    ("HostSystem", Some("notResponding")) => host_seen |= o.obj == host,
                    ("VirtualMachine", Some("disconnected")) => vms_disconnected += 1,
                    other => panic!("unexpected change {other:?}"),
                }
            }
        }
    }
    assert!(
        host_seen && vms_disconnected == 2,
        "host {host_seen}, vms {vms_disconnected}"
    );
    watch.close().await.unwrap();

    let events = c
        .query_events(&EventFilter {
            types: vec!["HostConnectionLostEvent".into()],
            max_count: Some(100),
            ..Default::default()
        })
        .await
        .unwrap();
    let lost = events
        .iter()
        .find(|e| e.type_name == "HostConnectionLostEvent")
        .expect("event");
    assert_eq!(lost.host.as_ref().and_then(|h| h.entity.as_ref()), Some(&host));
    assert!(lost.created().is_some());
}

#[tokio::test]
async fn heartbeat_tools_and_user_power_off() {
    let sim = Vcsim::start(1, 2);
    let c = sim.connect().await;
    let (_, vms) = inventory(&c).await;
    let vm = vms[0].obj.clone();
    // The test bed reports Tools running with a green heartbeat for a powered-on VM.
    assert_eq!(vms[0].get_str("guestHeartbeatStatus"), Some("green"));
    sim.ctl(&format!("/vm/heartbeat?name={}&status=red", vm.value))
        .await;
    sim.ctl(&format!("/vm/tools?name={}&status=toolsOk", vm.value))
        .await;
    let o = c
        .retrieve_object(&vm, &["guestHeartbeatStatus", "guest.toolsRunningStatus"])
        .await
        .unwrap();
    assert_eq!(o.get_str("guestHeartbeatStatus"), Some("red"));
    assert_eq!(o.get_str("guest.toolsRunningStatus"), Some("guestToolsRunning"));

    let target = &vms[1];
    let name = target.get_str("name").unwrap();
    sim.ctl(&format!("/vm/power-off?name={name}&user=alice")).await;
    let events = c
        .query_events(&EventFilter {
            entity: Some(target.obj.clone()),
            types: vec!["VmPoweredOffEvent".into()],
            max_count: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let ev = events
        .iter()
        .find(|e| e.type_name == "VmPoweredOffEvent")
        .expect("power-off event");
    assert_eq!(ev.user_name, "alice");
    assert_eq!(ev.vm.as_ref().unwrap().name, name);
    assert_eq!(ev.vm.as_ref().unwrap().entity.as_ref(), Some(&target.obj));
}

#[tokio::test]
async fn power_operations_and_task_failure() {
    let sim = Vcsim::start(1, 1);
    let c = sim.connect().await;
    let (_, vms) = inventory(&c).await;
    let vm = &vms[0].obj;
    let info = c
        .wait_for_task(&c.power_off_vm(vm).await.unwrap(), T)
        .await
        .unwrap();
    assert_eq!(info.description_id, "VirtualMachine.powerOff");
    assert_eq!(info.entity.as_ref(), Some(vm));
    // A second power-off fails as a task with InvalidPowerState.
    let err = c
        .wait_for_task(&c.power_off_vm(vm).await.unwrap(), T)
        .await
        .unwrap_err();
    assert!(matches!(err, Error::Task(_)), "{err:?}");
    assert!(err.is_fault("InvalidPowerState"), "{err:?}");
    c.wait_for_task(&c.power_on_vm(vm, None).await.unwrap(), T)
        .await
        .unwrap();
    c.wait_for_task(&c.reset_vm(vm).await.unwrap(), T).await.unwrap();
    c.shutdown_guest(vm).await.unwrap();
    let o = c.retrieve_object(vm, &["runtime.powerState"]).await.unwrap();
    assert_eq!(o.get_str("runtime.powerState"), Some("poweredOff"));
}

#[tokio::test]
async fn injected_faults_delays_and_relogin() {
    let sim = Vcsim::start(1, 1);
    let c = sim.connect().await;
    let (_, vms) = inventory(&c).await;
    let vm = vms[0].obj.clone();

    sim.ctl("/fault?method=PowerOnVM_Task&fault=InvalidState&message=busy")
        .await;
    let err = c.power_on_vm(&vm, None).await.unwrap_err();
    let f = err.vim_fault().expect("vim fault");
    assert_eq!(f.kind, FaultKind::InvalidState);
    assert_eq!(f.message, "busy");

    sim.ctl("/fault?method=PowerOffVM_Task&fault=BrandNewFault&detail=%3Cwhy%3Ecosmic%3C/why%3E")
        .await;
    let err = c.power_off_vm(&vm).await.unwrap_err();
    let f = err.vim_fault().unwrap();
    assert_eq!(
        (f.type_name.as_str(), &f.kind),
        ("BrandNewFault", &FaultKind::Other)
    );
    assert!(f.raw_xml.contains("<why>cosmic</why>"), "{}", f.raw_xml);

    // A lost session is re-established transparently; the watch notices and resyncs.
    let mut watch = c
        .watch(PropertyFilterSpec::for_object(&vm, &["name"]))
        .await
        .unwrap();
    watch
        .next(Duration::from_secs(1))
        .await
        .unwrap()
        .expect("initial");
    let before = c.session_generation();
    sim.ctl("/fault?method=RetrievePropertiesEx&fault=NotAuthenticated")
        .await;
    let o = c.retrieve_object(&vm, &["name"]).await.unwrap();
    assert!(o.get_str("name").is_some());
    assert_eq!(c.session_generation(), before + 1);
    let set = watch.next(Duration::from_secs(1)).await.unwrap().expect("resync");
    assert!(set.resync);
    assert_eq!(set.objects[0].kind, ObjectUpdateKind::Enter);

    // HTTP errors and timeouts.
    sim.ctl("/fault?method=CurrentTime&http=503").await;
    assert!(matches!(
        c.current_time().await.unwrap_err(),
        Error::Http { status: 503, .. }
    ));
    let slow = Client::builder(&sim.url)
        .tls(TlsMode::CaFile(sim.ca_file.clone()))
        .timeout(Duration::from_millis(300))
        .connect()
        .await
        .unwrap();
    sim.ctl("/delay?method=CurrentTime&ms=1500").await;
    let err = slow.current_time().await.unwrap_err();
    assert!(
        matches!(&err, Error::Transport { source, .. } if source.kind == TransportErrorKind::Timeout),
        "{err:?}"
    );
    assert!(c.current_time().await.unwrap().starts_with("20"));
}

#[tokio::test]
async fn snapshots_clone_register_migrate() {
    let sim = Vcsim::start(2, 1);
    let c = sim.connect().await;
    let (hosts, vms) = inventory(&c).await;
    let vm = &vms[0];

    let snap = c
        .wait_for_task(
            &c.create_snapshot(&vm.obj, "before", Some("d"), false, false)
                .await
                .unwrap(),
            T,
        )
        .await
        .unwrap();
    let snap = snap.result_moref().cloned().expect("snapshot ref");
    #[derive(serde::Deserialize)]
    #[serde(rename_all = "camelCase")]
    struct SnapInfo {
        current_snapshot: Option<MoRef>,
        root_snapshot_list: Vec<Tree>,
    }
    #[derive(serde::Deserialize)]
    struct Tree {
        snapshot: MoRef,
        name: String,
    }
    let o = c.retrieve_object(&vm.obj, &["snapshot"]).await.unwrap();
    let info: SnapInfo = o.get_as("snapshot").unwrap().unwrap();
    assert_eq!(info.current_snapshot.as_ref(), Some(&snap));
    assert_eq!(info.root_snapshot_list[0].name, "before");
    assert_eq!(info.root_snapshot_list[0].snapshot, snap);
    c.wait_for_task(
        &c.revert_to_current_snapshot(&vm.obj, None, None).await.unwrap(),
        T,
    )
    .await
    .unwrap();
    c.wait_for_task(&c.revert_to_snapshot(&snap, None, Some(true)).await.unwrap(), T)
        .await
        .unwrap();
    c.wait_for_task(&c.remove_snapshot(&snap, false, Some(true)).await.unwrap(), T)
        .await
        .unwrap();

    // Clone next to the original.
    let folder = c
        .retrieve_object(&vm.obj, &["parent"])
        .await
        .unwrap()
        .get_moref("parent")
        .cloned()
        .unwrap();
    let spec = CloneSpec::default();
    let clone = c
        .wait_for_task(&c.clone_vm(&vm.obj, &folder, "copy-1", &spec).await.unwrap(), T)
        .await
        .unwrap();
    let clone = clone.result_moref().cloned().unwrap();
    assert_eq!(
        c.retrieve_object(&clone, &["name"])
            .await
            .unwrap()
            .get_str("name"),
        Some("copy-1")
    );

    let pool = vm.get_moref("resourcePool").cloned().unwrap();
    let host = vm.get_moref("runtime.host").cloned().unwrap();
    // Move the VM to the other host, two ways.
    let other = hosts
        .iter()
        .map(|h| &h.obj)
        .find(|h| **h != host)
        .unwrap()
        .clone();
    c.wait_for_task(
        &c.migrate_vm(&vm.obj, None, Some(&other), MovePriority::Default)
            .await
            .unwrap(),
        T,
    )
    .await
    .unwrap();
    let now = c.retrieve_object(&vm.obj, &["runtime.host"]).await.unwrap();
    assert_eq!(now.get_moref("runtime.host"), Some(&other));
    let spec = vsphere_soap::RelocateSpec {
        host: Some(host.clone()),
        pool: Some(pool.clone()),
        ..Default::default()
    };
    c.wait_for_task(
        &c.relocate_vm(&vm.obj, &spec, Some(MovePriority::High))
            .await
            .unwrap(),
        T,
    )
    .await
    .unwrap();
    let now = c.retrieve_object(&vm.obj, &["runtime.host"]).await.unwrap();
    assert_eq!(now.get_moref("runtime.host"), Some(&host));

    // Unregister and register again from the .vmx path.
    // (vcsim wants the name the files were created with: let it derive it from the path.)
    let path = vm.get_str("summary.config.vmPathName").unwrap().to_string();
    let name = vm.get_str("name").unwrap();
    c.wait_for_task(&c.power_off_vm(&vm.obj).await.unwrap(), T)
        .await
        .unwrap();
    c.unregister_vm(&vm.obj).await.unwrap();
    let again = c
        .wait_for_task(
            &c.register_vm(&folder, &path, None, Some(&pool), Some(&host))
                .await
                .unwrap(),
            T,
        )
        .await
        .unwrap();
    let again = again.result_moref().cloned().unwrap();
    assert_eq!(
        c.retrieve_object(&again, &["name"])
            .await
            .unwrap()
            .get_str("name"),
        Some(name)
    );
}

#[tokio::test]
async fn host_operations_and_events() {
    let sim = Vcsim::start(2, 1);
    let c = sim.connect().await;
    let (hosts, _) = inventory(&c).await;
    let h = &hosts[0].obj;
    let cluster = hosts[0].get_moref("parent").cloned().unwrap();
    c.wait_for_task(&c.enter_maintenance_mode(h, 0, Some(false)).await.unwrap(), T)
        .await
        .unwrap();
    assert_eq!(
        c.retrieve_object(h, &["runtime.inMaintenanceMode"])
            .await
            .unwrap()
            .get_bool("runtime.inMaintenanceMode"),
        Some(true)
    );
    c.wait_for_task(&c.exit_maintenance_mode(h, 0).await.unwrap(), T)
        .await
        .unwrap();
    c.wait_for_task(&c.disconnect_host(h).await.unwrap(), T)
        .await
        .unwrap();
    assert_eq!(
        c.retrieve_object(h, &["runtime.connectionState"])
            .await
            .unwrap()
            .get_str("runtime.connectionState"),
        Some("disconnected")
    );
    c.wait_for_task(&c.reconnect_host(h).await.unwrap(), T)
        .await
        .unwrap();
    assert_eq!(
        c.retrieve_object(h, &["runtime.connectionState"])
            .await
            .unwrap()
            .get_str("runtime.connectionState"),
        Some("connected")
    );

    // Add a host, then remove it (it has no VMs).
    let spec = HostConnectSpec {
        host_name: "esx-new.example".into(),
        port: None,
        ssl_thumbprint: None,
        user_name: "root".into(),
        password: Password::new("esx-secret"),
        force: true,
    };
    let added = c
        .wait_for_task(&c.add_host(&cluster, &spec, true, None).await.unwrap(), T)
        .await
        .unwrap();
    let new_host = added.result_moref().cloned().expect("new host");
    assert_eq!(
        c.retrieve_object(&new_host, &["name"])
            .await
            .unwrap()
            .get_str("name"),
        Some("esx-new.example")
    );
    c.wait_for_task(&c.destroy(&new_host).await.unwrap(), T)
        .await
        .unwrap();

    // Post an event and read it back, by query and through a history collector.
    c.post_event(&PostedEvent {
        kind: PostedEventKind::Warning,
        message: "am: restarting VMs of a failed host".into(),
        vm: None,
        host: Some((h.clone(), hosts[0].get_str("name").unwrap().into())),
    })
    .await
    .unwrap();
    let events = c
        .query_events(&EventFilter {
            max_count: Some(1000),
            ..Default::default()
        })
        .await
        .unwrap();
    let posted = events
        .iter()
        .find(|e| e.type_name == "GeneralHostWarningEvent")
        .expect("posted event");
    assert_eq!(posted.user_name, "ha-user");
    assert_eq!(posted.host.as_ref().and_then(|a| a.entity.as_ref()), Some(h));
    let collector = c
        .event_collector(&EventFilter {
            types: vec!["GeneralHostWarningEvent".into()],
            ..Default::default()
        })
        .await
        .unwrap();
    collector.rewind().await.unwrap();
    let page = collector.read_next(50).await.unwrap();
    assert!(
        page.iter()
            .any(|e| e.full_formatted_message.contains("restarting")),
        "{page:?}"
    );
    collector.destroy().await.unwrap();
    c.logout().await.unwrap();
}

/// Records responses while it forwards requests: the seam used as a decorator.
#[derive(Debug)]
struct Recorder {
    inner: vsphere_soap::HttpTransport,
    log: std::sync::Mutex<Vec<(String, Vec<u8>)>>,
}

#[async_trait::async_trait]
impl vsphere_soap::RoundTripper for Recorder {
    async fn round_trip(
        &self,
        req: vsphere_soap::SoapRequest,
    ) -> Result<vsphere_soap::SoapResponse, vsphere_soap::TransportError> {
        let method = req.method.clone();
        let res = self.inner.round_trip(req).await?;
        self.log.lock().unwrap().push((method, res.body.clone()));
        Ok(res)
    }
}

/// Re-records `tests/fixtures/*.xml` from vcsim: `cargo test -p vsphere-soap --test vcsim -- --ignored`.
#[tokio::test]
#[ignore = "writes tests/fixtures; run by hand to re-record"]
async fn record_fixtures() {
    let sim = Vcsim::start(2, 1);
    let rec = std::sync::Arc::new(Recorder {
        inner: vsphere_soap::HttpTransport::new(
            &sim.url,
            &TlsMode::CaFile(sim.ca_file.clone()),
            Duration::from_secs(5),
        )
        .unwrap(),
        log: Default::default(),
    });
    let c = Client::builder(&sim.url)
        .transport(rec.clone())
        .connect()
        .await
        .unwrap();
    let _ = c.current_time().await.unwrap_err(); // NotAuthenticated: no login yet
    c.login(&Credentials::new("ha-user", Password::new("secret")))
        .await
        .unwrap();
    let (_, vms) = inventory(&c).await;
    let vm = vms[0].obj.clone();
    sim.ctl(&format!("/vm/power-off?name={}&user=alice", vm.value))
        .await;
    let _ = c
        .wait_for_task(&c.power_off_vm(&vm).await.unwrap(), T)
        .await
        .unwrap_err();
    c.wait_for_task(
        &c.create_snapshot(&vm, "s1", None, false, false).await.unwrap(),
        T,
    )
    .await
    .unwrap();
    let _ = c.retrieve_object(&vm, &["snapshot"]).await.unwrap();
    c.query_events(&EventFilter {
        types: vec!["VmPoweredOffEvent".into()],
        max_count: Some(10),
        ..Default::default()
    })
    .await
    .unwrap();
    let dir = support::workspace_root().join("crates/vsphere-soap/tests/fixtures");
    std::fs::create_dir_all(&dir).unwrap();
    let log = rec.log.lock().unwrap();
    let mut seen = std::collections::HashMap::new();
    for (method, body) in log.iter() {
        let n = seen.entry(method.clone()).or_insert(0);
        *n += 1;
        std::fs::write(dir.join(format!("{method}-{n}.xml")), body).unwrap();
    }
}
