//! Malformed, truncated or random input gives an error, never a panic.
#![allow(clippy::unwrap_used, clippy::expect_used, clippy::panic)]

use proptest::prelude::*;
use vsphere_soap::decode_response;

fn fixtures() -> Vec<Vec<u8>> {
    let dir = concat!(env!("CARGO_MANIFEST_DIR"), "/tests/fixtures");
    let mut v: Vec<Vec<u8>> = std::fs::read_dir(dir)
        .unwrap()
        .map(|e| std::fs::read(e.unwrap().path()).unwrap())
        .collect();
    v.sort();
    v
}

/// Decode as several methods, and map every value through the typed decoders too.
fn exercise(body: &[u8]) {
    for method in [
        "RetrievePropertiesEx",
        "WaitForUpdatesEx",
        "QueryEvents",
        "CurrentTime",
    ] {
        for status in [200, 500] {
            if let Ok(values) = decode_response(method, status, body) {
                for v in &values {
                    let _ = vsphere_soap::TaskInfo::from_value(v);
                    let _ = vsphere_soap::Event::from_value(v.clone());
                    let _ = vsphere_soap::from_value::<vsphere_soap::ServiceContent>(v);
                    let _ = vsphere_soap::VimFault::from_localized(v);
                }
            }
        }
    }
}

#[test]
fn truncated_fixtures_are_errors_not_panics() {
    for f in fixtures() {
        // About 400 cut points per fixture, plus every cut in the last 64 bytes.
        let step = (f.len() / 400).max(1);
        let cuts = (0..f.len())
            .step_by(step)
            .chain(f.len().saturating_sub(64)..f.len());
        for cut in cuts {
            exercise(&f[..cut]);
            // A truncated envelope never decodes as a success.
            assert!(decode_response("X", 200, &f[..cut]).is_err());
        }
    }
}

#[test]
fn deep_nesting_is_refused() {
    let mut s = String::from("<a>").repeat(100_000);
    s.push_str(&"</a>".repeat(100_000));
    assert!(decode_response("X", 200, s.as_bytes()).is_err());
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, ..ProptestConfig::default() })]

    #[test]
    fn random_bytes(body in proptest::collection::vec(any::<u8>(), 0..512)) {
        exercise(&body);
    }

    #[test]
    fn mutated_fixtures(which in 0usize..64, edits in proptest::collection::vec((any::<proptest::sample::Index>(), any::<u8>()), 1..8)) {
        let all = fixtures();
        let mut f = all[which % all.len()].clone();
        for (i, b) in edits {
            let at = i.index(f.len());
            f[at] = b;
        }
        exercise(&f);
    }

    #[test]
    fn random_xmlish(parts in proptest::collection::vec(prop_oneof![
        Just("<a>".to_string()), Just("</a>".to_string()), Just("<b xsi:type=\"xsd:int\">".to_string()),
        Just("</b>".to_string()), Just("&amp;".to_string()), Just("&#x0;".to_string()), Just("<![CDATA[x]]>".to_string()),
        Just("<soapenv:Envelope>".to_string()), Just("<soapenv:Body>".to_string()), Just("<returnval type=\"T\">".to_string()),
        "[a-z0-9 ]{0,5}",
    ], 0..40)) {
        exercise(parts.concat().as_bytes());
    }
}
