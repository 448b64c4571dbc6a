//! Decoding of recorded vcsim responses (tests/fixtures) and error paths through a scripted transport.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::sync::Arc;
use std::time::Duration;

use support::{SERVICE_CONTENT, Scripted, USER_SESSION, fault, response};
use vsphere_soap::{
    Client, Credentials, Error, EventFilter, FaultKind, MoRef, Password, PropertyFilterSpec, PropertySpec,
    TransportError, TransportErrorKind, Value,
};

fn fixture(name: &str) -> String {
    std::fs::read_to_string(format!(
        "{}/tests/fixtures/{name}.xml",
        env!("CARGO_MANIFEST_DIR")
    ))
    .unwrap()
}

fn creds() -> Credentials {
    Credentials::new("ha-user", Password::new("top-secret-pw"))
}

async fn client(t: &Arc<Scripted>, login: bool) -> Client {
    t.ok(
        "RetrieveServiceContent",
        &response("RetrieveServiceContent", SERVICE_CONTENT),
    );
    let mut b = Client::builder("https://vc.invalid")
        .transport(t.clone())
        .keep_alive(None);
    if login {
        t.ok("Login", &response("Login", USER_SESSION));
        b = b.credentials(creds());
    }
    b.connect().await.unwrap()
}

#[tokio::test]
async fn recorded_session_inventory_task_and_events() {
    let t = Scripted::new();
    t.ok("RetrieveServiceContent", &fixture("RetrieveServiceContent-1"));
    let c = Client::builder("vc.invalid")
        .transport(t.clone())
        .connect()
        .await
        .unwrap();
    let sc = c.service_content();
    assert_eq!(sc.root_folder, MoRef::new("Folder", "group-d1"));
    assert_eq!(sc.about.api_type, "VirtualCenter");
    assert!(sc.event_manager.is_some() && sc.view_manager.is_some());

    t.reply("CurrentTime", 500, &fixture("CurrentTime-1"));
    let err = c.current_time().await.unwrap_err();
    assert!(err.is_not_authenticated(), "{err:?}");
    let f = err.vim_fault().unwrap();
    assert!(matches!(&f.kind, FaultKind::NotAuthenticated));
    assert!(
        f.raw_xml.starts_with("<detail>") && f.raw_xml.contains("System.View"),
        "{}",
        f.raw_xml
    );

    t.ok("Login", &fixture("Login-1"));
    let s = c.login(&creds()).await.unwrap();
    assert_eq!(s.user_name, "ha-user");

    t.ok("CreateContainerView", &fixture("CreateContainerView-1"))
        .ok("RetrievePropertiesEx", &fixture("RetrievePropertiesEx-1"))
        .ok("DestroyView", &fixture("DestroyView-1"));
    let objs = c
        .retrieve_inventory(vec![PropertySpec::new("VirtualMachine", &["name"])])
        .await
        .unwrap();
    let vms: Vec<_> = objs.iter().filter(|o| o.obj.kind == "VirtualMachine").collect();
    let hosts: Vec<_> = objs.iter().filter(|o| o.obj.kind == "HostSystem").collect();
    assert_eq!((hosts.len(), vms.len()), (2, 2));
    let vm = vms[0];
    assert_eq!(vm.get_str("runtime.powerState"), Some("poweredOn"));
    assert_eq!(
        vm.get_moref("runtime.host").map(|h| h.kind.as_str()),
        Some("HostSystem")
    );
    assert_eq!(vm.get_i64("summary.config.memorySizeMB"), Some(32));
    assert_eq!(vm.get("summary.config.numCpu"), Some(&Value::Int(1)));
    assert_eq!(vm.get_morefs("datastore").len(), 1);
    assert!(hosts[0].get_i64("summary.hardware.memorySize").unwrap() > 0);
    assert!(!hosts[0].get_morefs("vm").is_empty());
    // The requests were well-formed: the container view traversal went out.
    let rp = t
        .requests
        .lock()
        .unwrap()
        .iter()
        .find(|r| r.method == "RetrievePropertiesEx")
        .unwrap()
        .clone();
    assert!(rp.body.contains(r#"<selectSet xsi:type="TraversalSpec"><name>traverseView</name><type>ContainerView</type><path>view</path>"#));

    // A failed task, running when first read, awaited through WaitForUpdatesEx.
    t.ok("RetrievePropertiesEx", &task_info("task-42", "running"))
        .ok("CreatePropertyCollector", &fixture("CreatePropertyCollector-1"))
        .ok("CreateFilter", &fixture("CreateFilter-1"))
        .ok("WaitForUpdatesEx", &fixture("WaitForUpdatesEx-1"))
        .ok("DestroyPropertyCollector", &fixture("DestroyPropertyCollector-1"));
    let err = c
        .wait_for_task(&MoRef::new("Task", "task-42"), Duration::from_secs(5))
        .await
        .unwrap_err();
    let Error::Task(te) = &err else { panic!("{err:?}") };
    assert_eq!(te.description_id, "VirtualMachine.powerOff");
    assert_eq!(
        te.fault.kind,
        FaultKind::InvalidPowerState {
            requested_state: Some("poweredOff".into()),
            existing_state: Some("poweredOff".into())
        }
    );

    // A snapshot tree, mapped with serde.
    t.ok("RetrievePropertiesEx", &fixture("RetrievePropertiesEx-2"));
    let o = c
        .retrieve_object(&MoRef::new("VirtualMachine", "vm-36"), &["snapshot"])
        .await
        .unwrap();
    let snap = o.get("snapshot").unwrap();
    assert_eq!(snap.type_name(), Some("VirtualMachineSnapshotInfo"));
    assert_eq!(
        snap.path("rootSnapshotList.name").and_then(Value::as_str),
        Some("s1")
    );

    // Events, with the user who caused them.
    t.ok("QueryEvents", &fixture("QueryEvents-1"));
    let events = c
        .query_events(&EventFilter {
            max_count: Some(10),
            ..Default::default()
        })
        .await
        .unwrap();
    assert_eq!(events.len(), 10);
    assert!(events.iter().any(|e| e.user_name == "alice"));
    assert!(events.iter().all(|e| e.key > 0 && e.created().is_some()));
    assert!(
        events
            .iter()
            .any(|e| e.type_name == "VmPoweredOnEvent" && e.vm.is_some())
    );
}

#[tokio::test]
async fn paging_follows_tokens() {
    let t = Scripted::new();
    let c = client(&t, false).await;
    let obj = |id: &str| {
        format!(
            r#"<objects><obj type="VirtualMachine">{id}</obj><propSet><name>name</name><val xsi:type="xsd:string">{id}</val></propSet></objects>"#
        )
    };
    t.ok(
        "RetrievePropertiesEx",
        &response(
            "RetrievePropertiesEx",
            &format!(
                "<returnval><token>t1</token>{}{}</returnval>",
                obj("vm-1"),
                obj("vm-2")
            ),
        ),
    )
    .ok(
        "ContinueRetrievePropertiesEx",
        &response(
            "ContinueRetrievePropertiesEx",
            &format!("<returnval><token>t2</token>{}</returnval>", obj("vm-3")),
        ),
    )
    .ok(
        "ContinueRetrievePropertiesEx",
        &response(
            "ContinueRetrievePropertiesEx",
            &format!("<returnval>{}</returnval>", obj("vm-4")),
        ),
    );
    let spec = PropertyFilterSpec::for_object(&MoRef::new("Folder", "group-d1"), &["name"]);
    let objs = c.retrieve_properties(&spec, Some(2)).await.unwrap();
    let names: Vec<_> = objs.iter().map(|o| o.get_str("name").unwrap()).collect();
    assert_eq!(names, ["vm-1", "vm-2", "vm-3", "vm-4"]);
    let reqs = t.requests.lock().unwrap();
    assert!(
        reqs[1]
            .body
            .contains("<options><maxObjects>2</maxObjects></options>")
    );
    assert!(reqs[2].body.contains("<token>t1</token>"));
    assert!(reqs[3].body.contains("<token>t2</token>"));
}

#[tokio::test]
async fn relogin_after_not_authenticated_then_retry() {
    let t = Scripted::new();
    let c = client(&t, true).await;
    assert_eq!(c.session_generation(), 1);
    t.reply("CurrentTime", 500, &fault("NotAuthenticated", "", ""))
        .ok("Login", &response("Login", USER_SESSION))
        .ok(
            "CurrentTime",
            &response("CurrentTime", "<returnval>2024-01-01T00:00:00Z</returnval>"),
        );
    assert_eq!(c.current_time().await.unwrap(), "2024-01-01T00:00:00Z");
    assert_eq!(c.session_generation(), 2);
    assert_eq!(
        t.methods(),
        [
            "RetrieveServiceContent",
            "Login",
            "CurrentTime",
            "Login",
            "CurrentTime"
        ]
    );
    let reqs = t.requests.lock().unwrap().clone();
    assert!(reqs[3].new_session, "re-login drops the old cookie");
    assert!(!reqs[4].new_session);
    // The password went on the wire but never into Debug output.
    assert!(reqs[3].body.contains("top-secret-pw"));
    assert!(!format!("{:?} {:?}", reqs[3], c).contains("top-secret-pw"));

    // A second NotAuthenticated right after the re-login is returned, not looped on.
    t.reply("CurrentTime", 500, &fault("NotAuthenticated", "", ""))
        .ok("Login", &response("Login", USER_SESSION))
        .reply("CurrentTime", 500, &fault("NotAuthenticated", "still no", ""));
    assert!(c.current_time().await.unwrap_err().is_not_authenticated());

    // A failed re-login surfaces InvalidLogin.
    t.reply("CurrentTime", 500, &fault("NotAuthenticated", "", ""))
        .reply("Login", 500, &fault("InvalidLogin", "Cannot complete login", ""));
    let err = c.current_time().await.unwrap_err();
    assert_eq!(err.vim_fault().map(|f| &f.kind), Some(&FaultKind::InvalidLogin));
}

#[tokio::test]
async fn without_credentials_not_authenticated_is_returned() {
    let t = Scripted::new();
    let c = client(&t, false).await;
    t.reply("CurrentTime", 500, &fault("NotAuthenticated", "", ""));
    assert!(c.current_time().await.unwrap_err().is_not_authenticated());
    assert_eq!(t.methods(), ["RetrieveServiceContent", "CurrentTime"]);
}

#[tokio::test]
async fn transport_http_and_xml_errors() {
    let t = Scripted::new();
    let c = client(&t, false).await;
    t.fail(
        "CurrentTime",
        TransportError::new(TransportErrorKind::Connect, "refused"),
    );
    assert!(
        matches!(c.current_time().await.unwrap_err(), Error::Transport { source, .. } if source.kind == TransportErrorKind::Connect)
    );
    t.reply(
        "CurrentTime",
        503,
        "<html><body>Service Unavailable</body></html>",
    );
    assert!(matches!(
        c.current_time().await.unwrap_err(),
        Error::Http { status: 503, .. }
    ));
    t.reply("CurrentTime", 502, "bad gateway");
    assert!(matches!(
        c.current_time().await.unwrap_err(),
        Error::Http { status: 502, .. }
    ));
    let full = response("CurrentTime", "<returnval>2024-01-01T00:00:00Z</returnval>");
    t.ok("CurrentTime", &full[..full.len() - 30]);
    assert!(matches!(c.current_time().await.unwrap_err(), Error::Xml { .. }));
    t.ok("CurrentTime", &response("SomethingElse", ""));
    assert!(matches!(
        c.current_time().await.unwrap_err(),
        Error::Decode { .. }
    ));
}

#[tokio::test]
async fn unknown_fault_keeps_type_and_raw_xml() {
    let t = Scripted::new();
    let c = client(&t, false).await;
    t.reply(
        "PowerOnVM_Task",
        500,
        &fault(
            "VmFaultToleranceIssue",
            "FT says no",
            "<reason>x &amp; y</reason>",
        ),
    );
    let err = c
        .power_on_vm(&MoRef::new("VirtualMachine", "vm-1"), None)
        .await
        .unwrap_err();
    let f = err.vim_fault().unwrap();
    assert_eq!(f.type_name, "VmFaultToleranceIssue");
    assert_eq!(f.kind, FaultKind::Other);
    assert_eq!(f.message, "FT says no");
    assert!(f.raw_xml.contains("<reason>x &amp; y</reason>"), "{}", f.raw_xml);
    assert_eq!(f.detail.field("reason").and_then(Value::as_str), Some("x & y"));
    let Error::Fault { fault, .. } = &err else {
        panic!()
    };
    assert_eq!(fault.code, "ServerFaultCode");
    assert!(err.to_string().contains("VmFaultToleranceIssue"), "{err}");
}

#[tokio::test]
async fn task_success_result_and_arguments_in_wsdl_order() {
    let t = Scripted::new();
    let c = client(&t, false).await;
    let vm = MoRef::new("VirtualMachine", "vm-1");
    t.ok(
        "CloneVM_Task",
        &response("CloneVM_Task", r#"<returnval type="Task">task-7</returnval>"#),
    );
    let spec = vsphere_soap::CloneSpec {
        location: vsphere_soap::RelocateSpec {
            host: Some(MoRef::new("HostSystem", "host-9")),
            ..Default::default()
        },
        power_on: true,
        ..Default::default()
    };
    let task = c
        .clone_vm(&vm, &MoRef::new("Folder", "f-1"), "copy <1>", &spec)
        .await
        .unwrap();
    assert_eq!(task, MoRef::new("Task", "task-7"));
    let body = t.requests.lock().unwrap().last().unwrap().body.clone();
    assert!(
        body.contains(concat!(
            r#"<CloneVM_Task xmlns="urn:vim25"><_this type="VirtualMachine">vm-1</_this><folder type="Folder">f-1</folder>"#,
            r#"<name>copy &lt;1&gt;</name><spec><location><host type="HostSystem">host-9</host></location>"#,
            r#"<template>false</template><powerOn>true</powerOn></spec></CloneVM_Task>"#
        )),
        "{body}"
    );

    let info = r#"<val xsi:type="TaskInfo"><key>task-7</key><task type="Task">task-7</task><descriptionId>VirtualMachine.clone</descriptionId><state>STATE</state>RESULT</val>"#;
    let update = |state: &str, result: &str| {
        response(
            "WaitForUpdatesEx",
            &format!(
                r#"<returnval><version>V</version><filterSet><filter type="PropertyFilter">f</filter><objectSet><kind>KIND</kind><obj type="Task">task-7</obj><changeSet><name>info</name><op>assign</op>{}</changeSet></objectSet></filterSet></returnval>"#,
                info.replace("STATE", state).replace("RESULT", result)
            ),
        )
    };
    t.ok("RetrievePropertiesEx", &task_info("task-7", "queued"));
    collector_and_filter(&t)
        .ok(
            "WaitForUpdatesEx",
            &update("running", "")
                .replace("KIND", "enter")
                .replace(">V<", ">1<"),
        )
        .ok("WaitForUpdatesEx", &response("WaitForUpdatesEx", ""))
        .ok(
            "WaitForUpdatesEx",
            &update(
                "success",
                r#"<result xsi:type="ManagedObjectReference" type="VirtualMachine">vm-2</result>"#,
            )
            .replace("KIND", "modify")
            .replace(">V<", ">2<"),
        )
        .ok(
            "DestroyPropertyCollector",
            &response("DestroyPropertyCollector", ""),
        );
    let info = c.wait_for_task(&task, Duration::from_secs(30)).await.unwrap();
    assert_eq!(info.result_moref(), Some(&MoRef::new("VirtualMachine", "vm-2")));
    let reqs = t.requests.lock().unwrap();
    let waits: Vec<_> = reqs
        .iter()
        .filter(|r| r.method == "WaitForUpdatesEx")
        .map(|r| r.body.clone())
        .collect();
    assert!(waits[0].contains("<version></version>"));
    assert!(
        waits[1].contains("<version>1</version>"),
        "the version is carried between waits"
    );
    assert!(
        waits[2].contains("<version>1</version>"),
        "an empty wait keeps the version"
    );
}

#[tokio::test]
async fn keep_alive_logs_in_again_when_the_session_expired() {
    let t = Scripted::new();
    t.ok(
        "RetrieveServiceContent",
        &response("RetrieveServiceContent", SERVICE_CONTENT),
    )
    .ok("Login", &response("Login", USER_SESSION))
    // The keep-alive asks for currentSession: unset means the session is gone.
    .ok("RetrievePropertiesEx", &response("RetrievePropertiesEx", ""))
    .ok("Login", &response("Login", USER_SESSION));
    let c = Client::builder("https://vc.invalid")
        .transport(t.clone())
        .credentials(creds())
        .keep_alive(Some(Duration::from_millis(50)))
        .connect()
        .await
        .unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while c.session_generation() < 2 && tokio::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(c.session_generation(), 2);
    let reqs = t.requests.lock().unwrap().clone();
    assert!(reqs[2].body.contains("<pathSet>currentSession</pathSet>"));
    drop(c); // stops the keep-alive task
}

/// An adapter runs these on a multi-threaded runtime: the futures must be `Send`.
#[allow(dead_code, clippy::let_underscore_future)]
fn futures_are_send(c: &Client, w: &mut vsphere_soap::PropertyWatch) {
    fn send<T: Send>(_: T) {}
    send(c.retrieve_inventory(vec![]));
    send(c.wait_for_task(&MoRef::new("Task", "t"), Duration::from_secs(1)));
    send(c.query_events(&EventFilter::default()));
    send(c.power_on_vm(&MoRef::new("VirtualMachine", "v"), None));
    send(w.next(Duration::from_secs(1)));
    send(c.clone());
}

/// A `RetrievePropertiesEx` answer: `task`'s info in `state`.
/// Scripts the collector and filter a watch makes (`pc-2`, `f`).
fn collector_and_filter(t: &Scripted) -> &Scripted {
    t.ok(
        "CreatePropertyCollector",
        &response(
            "CreatePropertyCollector",
            r#"<returnval type="PropertyCollector">pc-2</returnval>"#,
        ),
    )
    .ok(
        "CreateFilter",
        &response(
            "CreateFilter",
            r#"<returnval type="PropertyFilter">f</returnval>"#,
        ),
    )
}

fn task_info(task: &str, state: &str) -> String {
    response(
        "RetrievePropertiesEx",
        &format!(
            r#"<returnval><objects><obj type="Task">{task}</obj><propSet><name>info</name><val xsi:type="TaskInfo"><key>{task}</key><task type="Task">{task}</task><descriptionId>VirtualMachine.powerOn</descriptionId><state>{state}</state></val></propSet></objects></returnval>"#
        ),
    )
}

#[tokio::test]
async fn a_task_done_when_first_read_needs_no_collector() {
    let t = Scripted::new();
    t.ok(
        "RetrieveServiceContent",
        &response("RetrieveServiceContent", SERVICE_CONTENT),
    )
    .ok("RetrievePropertiesEx", &task_info("task-9", "success"));
    let c = Client::builder("vc.invalid")
        .transport(t.clone())
        .connect()
        .await
        .unwrap();
    let info = c
        .wait_for_task(&MoRef::new("Task", "task-9"), Duration::from_secs(5))
        .await
        .unwrap();
    assert_eq!(info.state, vsphere_soap::TaskState::Success);
    assert_eq!(t.methods(), ["RetrieveServiceContent", "RetrievePropertiesEx"]);
}

#[tokio::test]
async fn a_patient_watch_gives_the_long_poll_more_time_than_a_call() {
    let t = Scripted::new();
    let c = client(&t, false).await;
    for _ in 0..2 {
        collector_and_filter(&t).ok("WaitForUpdatesEx", &response("WaitForUpdatesEx", ""));
    }
    let spec = || PropertyFilterSpec::for_object(&MoRef::new("Folder", "group-d1"), &["name"]);
    let mut plain = c.watch(spec()).await.unwrap();
    assert!(plain.next(Duration::from_secs(5)).await.unwrap().is_none());
    let mut patient = c.watch(spec()).await.unwrap().patience(Duration::from_secs(300));
    assert!(patient.next(Duration::from_secs(5)).await.unwrap().is_none());
    let timeouts: Vec<Duration> = t
        .requests
        .lock()
        .unwrap()
        .iter()
        .filter(|r| r.method == "WaitForUpdatesEx")
        .map(|r| r.timeout)
        .collect();
    assert_eq!(
        timeouts,
        vec![c.timeout() + Duration::from_secs(5), Duration::from_secs(305)],
        "the call timeout, then the patience, after the wait"
    );
}
