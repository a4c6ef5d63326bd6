//! Property tests of what a peer or a job file sends the contract's parsers: job spec TOML,
//! ids, and audit entries. Any input gives a value or an error, never a panic.

use proptest::prelude::*;

use fedsynth_proto::v1::AuditEntry;
use fedsynth_proto::{FederationName, JobId, JobSpec, WorkerId, verify_audit};

const VALID: &str = r#"version = 1
name = "demo"
federation = "f"
model = "tvae"
schema_toml = "version = 1\ncolumns = []\n"
epsilon = 3.0
delta = 1e-6
rounds = 3
local_steps = 5
batch_size = 100
min_workers = 2
rows = 100
recipients = ["k"]
parameters = 1000
"#;

/// A value that holds an escaped newline (`"\n"` in the TOML) is echoed escaped: the
/// error stays one line (the property below found `model = "\ntvae"`).
#[test]
fn a_newline_inside_a_value_stays_out_of_the_errors_line() {
    let edits = [
        VALID.replace("model = \"tvae\"", "model = \"\\ntvae\""),
        VALID.replace(
            "model = \"tvae\"",
            "model = { kind = \"tvae\", \"a\\nb\" = [1] }",
        ),
        format!("{VALID}secure_aggregation = \"none\"\nformat = \"c\\nsv\"\n"),
    ];
    for text in edits {
        let e = JobSpec::from_toml(&text).expect_err(&text);
        assert!(e.starts_with("job spec:") && e.lines().count() == 1, "{e}");
        assert!(e.contains("\\n"), "{e}");
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    #[test]
    fn job_spec_text_never_panics(text in "[ -~\n]{0,400}") {
        let _ = JobSpec::from_toml(&text);
    }

    #[test]
    fn an_edited_job_spec_parses_or_names_the_problem(at in 0..VALID.len(), insert in "[ -~]{0,8}") {
        let mut text = VALID.to_string();
        let at = (0..=at).rev().find(|&i| text.is_char_boundary(i)).unwrap_or(0);
        text.insert_str(at, &insert);
        match JobSpec::from_toml(&text) {
            Ok(spec) => prop_assert!(spec.validate().is_ok()),
            Err(e) => prop_assert!(e.starts_with("job spec:") && e.lines().count() == 1, "{}", e),
        }
    }

    #[test]
    fn ids_never_panic_and_never_hold_a_path(id in "\\PC{0,200}") {
        for ok in [JobId::new(id.clone()).is_ok(), FederationName::new(id.clone()).is_ok()] {
            if ok {
                prop_assert!(!id.contains('/') && !id.contains('.') && !id.is_empty());
            }
        }
        if let Ok(w) = WorkerId::new(id.clone()) {
            prop_assert_eq!(w.as_str().matches('/').count(), 1);
            prop_assert!(!w.as_str().contains('.'));
        }
    }

    #[test]
    fn audit_entries_never_panic(
        seqs in proptest::collection::vec(any::<i64>(), 0..6),
        text in "\\PC{0,40}",
    ) {
        let entries: Vec<AuditEntry> = seqs
            .iter()
            .map(|&seq| AuditEntry {
                seq,
                at_ms: seq,
                actor: text.clone(),
                action: text.clone(),
                job_id: String::new(),
                detail: text.clone(),
                prev_hash: text.clone(),
                hash: text.clone(),
            })
            .collect();
        let _ = verify_audit(&entries, true);
        let _ = verify_audit(&entries, false);
    }
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 512, failure_persistence: None, ..ProptestConfig::default() })]

    /// Every message a peer sends is decoded from bytes it chose.
    #[test]
    fn wire_messages_decode_or_fail_from_any_bytes(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        use fedsynth_proto::v1 as pb;
        use prost::Message;
        let b = bytes.as_slice();
        let _ = pb::UpdateChunk::decode(b);
        let _ = pb::ArtifactChunk::decode(b);
        let _ = pb::RegisterRequest::decode(b);
        let _ = pb::AnswerRequest::decode(b);
        let _ = pb::PollRequest::decode(b);
        let _ = pb::PollResponse::decode(b);
        let _ = pb::SubmitRequest::decode(b);
        let _ = pb::ListAuditRequest::decode(b);
        let _ = pb::Chunk::decode(b);
    }
}
