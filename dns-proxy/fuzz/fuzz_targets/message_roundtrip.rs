//! parse → encode → parse gives the same message (the wire format we rely on).
#![no_main]

use hickory_proto::op::Message;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    if let Ok(m) = Message::from_vec(data)
        && let Ok(bytes) = m.to_vec()
    {
        let again = Message::from_vec(&bytes).expect("re-encoded message must parse");
        assert_eq!(again.queries, m.queries);
        assert_eq!(again.metadata.id, m.metadata.id);
    }
});
