//! Reads of single objects made while one is in flight go as one call, against the vcsim test
//! bed: each gets its own object's answer, a missing object faults only its own read, and a read
//! given up does not leave the others waiting.

#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

mod support;

use std::future::Future;
use std::pin::Pin;
use std::task::Poll;
use std::time::Duration;

use support::Vcsim;
use vsphere_soap::{Client, MoRef, ObjectContent, PropertySpec};

const PATHS: &[&str] = &["name", "runtime.powerState"];

type Read<'a> = Pin<Box<dyn Future<Output = vsphere_soap::Result<ObjectContent>> + Send + 'a>>;

/// The VMs and their names, as one inventory read gives them.
async fn vms(c: &Client) -> Vec<(MoRef, String)> {
    let mut all: Vec<(MoRef, String)> = c
        .retrieve_inventory(vec![PropertySpec::new("VirtualMachine", &["name"])])
        .await
        .expect("inventory")
        .into_iter()
        .map(|o| (o.obj.clone(), o.get_str("name").unwrap_or_default().to_owned()))
        .collect();
    all.sort();
    all
}

fn retrieve_calls(sim: &Vcsim) -> u64 {
    sim.get("/calls")["RetrievePropertiesEx"]["count"]
        .as_u64()
        .unwrap_or(0)
}

/// Polls each read once: each asks to join the next call (none can be answered yet).
async fn ask(reads: &mut [Read<'_>]) {
    for r in reads.iter_mut() {
        let first = std::future::poll_fn(|cx| Poll::Ready(r.as_mut().poll(cx))).await;
        assert!(
            first.is_pending(),
            "a read answered while the call before it is held"
        );
    }
}

/// A test bed whose every `RetrievePropertiesEx` is held, with one read of its first VM at
/// vCenter (held there) and the calls counted from before it.
struct Held {
    sim: Vcsim,
    c: Client,
    /// The VMs and their names, sorted; the first is the one read.
    vms: Vec<(MoRef, String)>,
    /// The read held at vCenter.
    first: tokio::task::JoinHandle<vsphere_soap::Result<ObjectContent>>,
    before: u64,
}

impl Held {
    async fn start() -> Held {
        let sim = Vcsim::start(2, 3);
        let c = sim.connect().await;
        let vms = vms(&c).await;
        assert!(vms.len() >= 5, "the test bed has {} VMs", vms.len());
        let before = retrieve_calls(&sim);
        sim.post("/hold?method=RetrievePropertiesEx");
        let (c2, obj) = (c.clone(), vms[0].0.clone());
        let first = tokio::spawn(async move { c2.retrieve_object(&obj, PATHS).await });
        for _ in 0..500 {
            if sim.get("/held").as_array().is_some_and(|h| h.len() == 1) {
                return Held {
                    sim,
                    c,
                    vms,
                    first,
                    before,
                };
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        panic!("the first read never reached vCenter");
    }

    fn release(&self) {
        self.sim.post("/release?method=RetrievePropertiesEx");
    }

    /// `RetrievePropertiesEx` calls vCenter served since before the held read.
    fn calls(&self) -> u64 {
        retrieve_calls(&self.sim) - self.before
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn reads_made_while_one_is_in_flight_go_as_one_call_each_with_its_own_answer() {
    let mut h = Held::start().await;
    let vms = &h.vms;
    // Three more VMs, one of them twice.
    let wanted = [&vms[1], &vms[2], &vms[3], &vms[1]];
    let mut reads: Vec<Read<'_>> = wanted
        .iter()
        .map(|(vm, _)| Box::pin(h.c.retrieve_object(vm, PATHS)) as Read<'_>)
        .collect();
    ask(&mut reads).await;
    h.release();
    let first = (&mut h.first).await.expect("join").expect("the held read");
    assert_eq!(first.get_str("name"), Some(vms[0].1.as_str()));
    for ((vm, name), read) in wanted.iter().zip(reads) {
        let got = read.await.expect("a merged read");
        assert_eq!(&got.obj, vm);
        assert_eq!(got.get_str("name"), Some(name.as_str()), "{vm}'s own name");
        assert!(
            got.get_str("runtime.powerState").is_some(),
            "{vm}: both paths read"
        );
    }
    assert_eq!(
        h.calls(),
        2,
        "the held read, then one call for the four made meanwhile"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_missing_object_faults_only_its_own_read() {
    let mut h = Held::start().await;
    let vms = &h.vms;
    let gone = MoRef::new("VirtualMachine", "vm-does-not-exist");
    let mut reads: Vec<Read<'_>> = vec![
        Box::pin(h.c.retrieve_object(&vms[1].0, PATHS)),
        Box::pin(h.c.retrieve_object(&gone, PATHS)),
        Box::pin(h.c.retrieve_object(&vms[2].0, PATHS)),
    ];
    ask(&mut reads).await;
    h.release();
    (&mut h.first).await.expect("join").expect("the held read");
    let mut answers = Vec::new();
    for r in reads {
        answers.push(r.await);
    }
    assert_eq!(
        answers[0].as_ref().expect("a VM that exists").get_str("name"),
        Some(vms[1].1.as_str())
    );
    let err = answers[1].as_ref().expect_err("the missing VM");
    assert!(err.is_fault("ManagedObjectNotFound"), "{err}");
    assert_eq!(
        answers[2].as_ref().expect("a VM that exists").get_str("name"),
        Some(vms[2].1.as_str())
    );
    assert_eq!(
        h.calls(),
        5,
        "the held read, the merged call that faulted, then each of the three alone"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_read_given_up_passes_the_next_call_to_those_waiting() {
    let mut h = Held::start().await;
    let vms = &h.vms;
    let mut reads: Vec<Read<'_>> = vec![
        Box::pin(h.c.retrieve_object(&vms[1].0, PATHS)),
        Box::pin(h.c.retrieve_object(&vms[2].0, PATHS)),
    ];
    ask(&mut reads).await;
    // The read in flight is given up (its caller timed out, say); its call stays at vCenter.
    h.first.abort();
    assert!((&mut h.first).await.is_err(), "the held read was given up");
    h.release();
    for ((_, name), r) in vms[1..3].iter().zip(reads) {
        let got = tokio::time::timeout(Duration::from_secs(30), r)
            .await
            .expect("a read waiting behind a given-up one is answered")
            .expect("a merged read");
        assert_eq!(got.get_str("name"), Some(name.as_str()));
    }
    assert_eq!(
        h.calls(),
        2,
        "the given-up read's call (vCenter still served it), then one for the two waiting"
    );
}
