//! Fuzz the response decoder: any bytes must give `Ok` or `Err`, never a panic.
#![no_main]

libfuzzer_sys::fuzz_target!(|data: &[u8]| {
    for status in [200, 500] {
        if let Ok(values) = vsphere_soap::decode_response("RetrievePropertiesEx", status, data) {
            for v in &values {
                let _ = vsphere_soap::TaskInfo::from_value(v);
                let _ = vsphere_soap::Event::from_value(v.clone());
            }
        }
    }
});
