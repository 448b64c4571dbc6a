use crate::{ApiErrorKind, ApiTrigger, Fault, FaultDepth, FaultScript};
use std::time::Duration;

const EXAMPLE: &str = "
# comment
at 30s host h3 crash
at 31s host h4 crash permanent
at 45s vm vm-007 crash            # depth transient by default
at 46s vm vm-008 crash corrupt     # corrupt | disklost | hostlocal
at 60s vm vm-010 hang
at 70s vm vm-011 poweroff by alice
at 71s vm vm-012 poweroff          # no user: a crash power-off
at 80s host h2 isolate
at 95s host h2 heal
at 85s host h5 disconnect
at 90s api power_on fail 2 timeout
at 91s api * latency 3s
at 100s probes loss 20%
at 110s manager isolate
";

#[test]
fn the_documented_example_parses_in_time_order() {
    let s = FaultScript::parse(EXAMPLE).unwrap();
    assert_eq!(s.faults.len(), 14);
    let times: Vec<u64> = s.faults.iter().map(|f| f.at.as_secs()).collect();
    let mut sorted = times.clone();
    sorted.sort();
    assert_eq!(times, sorted);
    let f = |secs: u64| {
        s.faults
            .iter()
            .find(|f| f.at == Duration::from_secs(secs))
            .unwrap()
            .fault
            .clone()
    };
    assert_eq!(
        f(31),
        Fault::HostCrash {
            host: "h4".into(),
            permanent: true
        }
    );
    assert_eq!(
        f(45),
        Fault::VmGuestCrash {
            vm: "vm-007".into(),
            depth: FaultDepth::Transient
        }
    );
    assert_eq!(
        f(46),
        Fault::VmGuestCrash {
            vm: "vm-008".into(),
            depth: FaultDepth::Corrupt
        }
    );
    assert_eq!(
        f(60),
        Fault::VmHang {
            vm: "vm-010".into(),
            depth: FaultDepth::Transient
        }
    );
    assert_eq!(
        f(70),
        Fault::VmPowerOff {
            vm: "vm-011".into(),
            user: Some("alice".into())
        }
    );
    assert_eq!(
        f(71),
        Fault::VmPowerOff {
            vm: "vm-012".into(),
            user: None
        }
    );
    assert_eq!(f(85), Fault::HostDisconnect { host: "h5".into() });
    assert_eq!(
        f(90),
        Fault::ApiFault {
            method: "power_on".into(),
            error: ApiErrorKind::Timeout,
            trigger: ApiTrigger::Count(2)
        }
    );
    assert_eq!(
        f(91),
        Fault::ApiLatency {
            method: "*".into(),
            extra: Duration::from_secs(3)
        }
    );
    assert_eq!(f(100), Fault::ProbeLoss { probability: 0.2 });
    assert_eq!(f(110), Fault::ManagerIsolate);
    // Line numbers are kept, and the 95s line (written after 80s) follows its time.
    assert_eq!(s.faults.iter().find(|f| f.at.as_secs() == 95).unwrap().line, 11);
}

#[test]
fn display_writes_the_script_back() {
    let s = FaultScript::parse(EXAMPLE).unwrap();
    let again = FaultScript::parse(&s.to_string()).unwrap();
    let strip = |s: &FaultScript| {
        s.faults
            .iter()
            .map(|f| (f.at, f.fault.clone()))
            .collect::<Vec<_>>()
    };
    assert_eq!(strip(&again), strip(&s));
    let extra = "at 1m30s api migrate fail 12.5% lost-reply\nat 1500ms vm v poweron by bob\nat 2s vm v hang hostlocal\n";
    let s = FaultScript::parse(extra).unwrap();
    assert_eq!(strip(&FaultScript::parse(&s.to_string()).unwrap()), strip(&s));
    assert_eq!(s.faults[0].at, Duration::from_millis(1500));
    assert_eq!(s.faults[2].at, Duration::from_secs(90));
}

#[test]
fn errors_name_the_line_and_the_problem() {
    let cases = [
        ("at 10s host h1 crash\nhost h1 crash", 2, "expected `at <time>"),
        ("\n\nat ten host h1 crash", 3, "bad time"),
        ("at 10 host h1 crash", 1, "no unit"),
        ("at 5s", 1, "missing fault"),
        ("at 5s rack r1 crash", 1, "unknown subject `rack`"),
        ("at 5s host h1 explode", 1, "unknown host fault `explode`"),
        ("at 5s host h1 crash forever", 1, "expected `permanent`"),
        ("at 5s host h1 isolate now", 1, "unexpected `now`"),
        ("# ok\nat 5s vm v crash deep", 2, "unknown fault depth `deep`"),
        ("at 5s vm v poweroff alice", 1, "expected `by <user>`"),
        ("at 5s vm v poweroff by", 1, "missing user name"),
        ("at 5s vm v reboot", 1, "unknown vm fault `reboot`"),
        (
            "at 5s api power_on fail two timeout",
            1,
            "expected a count or a percentage",
        ),
        (
            "at 5s api power_on fail 2 kaboom",
            1,
            "unknown error kind `kaboom`",
        ),
        ("at 5s api power_on fail 150% busy", 1, "not between 0% and 100%"),
        ("at 5s api power_on latency soon", 1, "not a duration"),
        ("at 5s api power_on", 1, "expected `api <method> fail"),
        ("at 5s probes loss 20", 1, "expected a percentage"),
        ("at 5s manager panic", 1, "expected `manager isolate`"),
    ];
    for (text, line, needle) in cases {
        let err = FaultScript::parse(text).unwrap_err();
        assert_eq!(err.line, line, "{text:?}: {err}");
        assert!(err.message.contains(needle), "{text:?}: {err}");
        assert!(
            err.to_string()
                .starts_with(&format!("fault script line {line}: "))
        );
    }
}

#[test]
fn operator_lines_parse_and_print_back() {
    use am_core::OperatorRequest;
    let s = FaultScript::parse(
        "at 20s operator evacuate h1 enter-maintenance\nat 30s operator evacuate h2 reason predicted-failure\nat 40s operator maintenance exit h1",
    )
    .unwrap();
    assert_eq!(
        s.faults[0].fault,
        Fault::Operator {
            request: OperatorRequest::Evacuate {
                host: "h1".into(),
                reason: "maintenance".into(),
                enter_maintenance: true,
            }
        }
    );
    for f in &s.faults {
        let again = FaultScript::parse(&format!("at 1s {}", f.fault)).unwrap();
        assert_eq!(again.faults[0].fault, f.fault);
    }
    assert!(FaultScript::parse("at 1s operator evacuate").is_err());
    assert!(FaultScript::parse("at 1s operator maintenance sideways h1").is_err());
}
