//! Every JSON body the API reads (deployments, device auth requests, logs, status
//! reports, preauthorizations, inventory…), parsed and checked as its route does: the
//! first byte picks the body, the rest is the body. Never a panic.
#![no_main]

use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Some((&kind, body)) = data.split_first() {
        api::routes::fuzzing::json_body(kind, body);
    }
});
