//! The budget ledger: composition instead of naive sums, refusal at the cap, persistence
//! across restarts, concurrent spenders, and a child process killed mid-spend.
#![allow(clippy::unwrap_used)] // tests fail loudly by design

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use fedsynth_privacy::ledger::{Budget, Ledger};
use fedsynth_privacy::pld::PldAccountant;
use fedsynth_privacy::{Delta, DpEvent, Epsilon, PrivacyError};

fn cap(eps: f64) -> Budget {
    Budget {
        epsilon: Epsilon::new(eps).unwrap(),
        delta: Delta::new(1e-5).unwrap(),
    }
}

fn sgd(steps: u64) -> DpEvent {
    DpEvent::subsampled_gaussian(0.01, 1.0, steps).unwrap()
}

#[test]
fn spends_compose_and_the_cap_refuses_without_recording() {
    let dir = tempfile::tempdir().unwrap();
    let ledger = Ledger::open(dir.path().join("ledger.db")).unwrap();
    ledger.set_cap("alice", "customers", cap(2.0)).unwrap();
    let s1 = ledger
        .try_spend("alice", "customers", &sgd(300), "job 1")
        .unwrap();
    let s2 = ledger
        .try_spend("alice", "customers", &sgd(300), "job 2")
        .unwrap();
    // Composition: two 300-step runs cost what one 600-step run costs, far less than 2×.
    let one_600 = PldAccountant::default().epsilon(&[sgd(600)], 1e-5).unwrap();
    assert!(
        (s2.epsilon_after - one_600).abs() < 1e-3,
        "{} vs {one_600}",
        s2.epsilon_after
    );
    assert!(s2.epsilon_after < 2.0 * s1.epsilon_after * 0.9);
    // A spend past the cap is refused with a clear message, and nothing is recorded.
    let err = ledger
        .try_spend("alice", "customers", &sgd(5000), "job 3")
        .unwrap_err();
    assert!(matches!(err, PrivacyError::BudgetExceeded { .. }), "{err}");
    assert!(err.to_string().contains("over the cap of 2"), "{err}");
    let st = ledger.statement("alice", "customers").unwrap();
    assert_eq!(st.spends.len(), 2);
    assert!((st.spent - s2.epsilon_after).abs() < 1e-9);
    assert!(st.remaining() > 0.0);
    // Several events spend together or not at all.
    let both = [DpEvent::laplace(1.0, 10.0, 1).unwrap(), sgd(5000)];
    assert!(
        ledger
            .try_spend_all("alice", "customers", &both, "job 4")
            .is_err()
    );
    assert_eq!(
        ledger.statement("alice", "customers").unwrap().spends.len(),
        2
    );
    let small = [DpEvent::laplace(1.0, 100.0, 1).unwrap(), sgd(10)];
    assert_eq!(
        ledger
            .try_spend_all("alice", "customers", &small, "job 5")
            .unwrap()
            .len(),
        2
    );
    // Other holders and datasets are separate, and need their own cap.
    assert!(ledger.try_spend("bob", "customers", &sgd(10), "x").is_err());
    assert!(ledger.statement("alice", "other").is_err());
}

#[test]
fn ledger_survives_restart() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("sub/dir/ledger.db");
    {
        let ledger = Ledger::open(&path).unwrap();
        ledger.set_cap("h", "d", cap(5.0)).unwrap();
        ledger
            .try_spend("h", "d", &DpEvent::laplace(1.0, 10.0, 2).unwrap(), "stats")
            .unwrap();
        ledger.try_spend("h", "d", &sgd(100), "train").unwrap();
    }
    let ledger = Ledger::open(&path).unwrap();
    let st = ledger.statement("h", "d").unwrap();
    assert_eq!(st.spends.len(), 2);
    assert_eq!(st.spends[0].note, "stats");
    assert_eq!(st.cap, cap(5.0));
    assert!(st.spent > 0.2);
}

#[test]
fn concurrent_spenders_never_overspend() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    Ledger::open(&path)
        .unwrap()
        .set_cap("h", "d", cap(1.0))
        .unwrap();
    let handles: Vec<_> = (0..4)
        .map(|t| {
            let path = path.clone();
            std::thread::spawn(move || {
                let ledger = Ledger::open(&path).unwrap();
                let mut ok = 0;
                for i in 0..40 {
                    match ledger.try_spend("h", "d", &sgd(40), &format!("thread {t} spend {i}")) {
                        Ok(_) => ok += 1,
                        Err(PrivacyError::BudgetExceeded { .. }) => break,
                        Err(e) => panic!("{e}"),
                    }
                }
                ok
            })
        })
        .collect();
    let granted: usize = handles.into_iter().map(|h| h.join().unwrap()).sum();
    let ledger = Ledger::open(&path).unwrap();
    let st = ledger.statement("h", "d").unwrap();
    assert_eq!(st.spends.len(), granted);
    assert!(st.spent <= 1.0, "overspent: {}", st.spent);
    // The budget really is exhausted: one more spend would pass the cap.
    assert!(ledger.try_spend("h", "d", &sgd(40), "one more").is_err());
    // ε recorded with each spend only grows.
    assert!(
        st.spends
            .windows(2)
            .all(|w| w[0].epsilon_after <= w[1].epsilon_after)
    );
}

const CHILD_ENV: &str = "FEDSYNTH_LEDGER_CHILD";

/// Runs only as a child of `killed_mid_spend_leaves_no_entry`: starts a spend, signals, and
/// hangs before committing until it is killed.
#[test]
fn ledger_child_spender() {
    let Ok(spec) = std::env::var(CHILD_ENV) else {
        return;
    };
    let (db, marker, mode) = {
        let mut parts = spec.split('|');
        (
            PathBuf::from(parts.next().unwrap()),
            PathBuf::from(parts.next().unwrap()),
            parts.next().unwrap().to_string(),
        )
    };
    let ledger = Ledger::open(&db).unwrap();
    if mode == "hang" {
        let _ = ledger.try_spend_then("h", "d", &[sgd(10)], "never committed", || {
            std::fs::write(&marker, b"in transaction").unwrap();
            std::thread::sleep(Duration::from_secs(120));
        });
    } else {
        std::fs::write(&marker, b"looping").unwrap();
        loop {
            if ledger.try_spend("h", "d", &sgd(1), "loop").is_err() {
                std::thread::sleep(Duration::from_millis(1));
            }
        }
    }
}

fn spawn_child(db: &Path, marker: &Path, mode: &str) -> std::process::Child {
    Command::new(std::env::current_exe().unwrap())
        .args([
            "--exact",
            "ledger_child_spender",
            "--nocapture",
            "--test-threads=1",
        ])
        .env(
            CHILD_ENV,
            format!("{}|{}|{mode}", db.display(), marker.display()),
        )
        .stdout(std::process::Stdio::null())
        .spawn()
        .unwrap()
}

fn wait_for(marker: &Path) {
    let start = Instant::now();
    while !marker.exists() {
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "child never reached its spend"
        );
        std::thread::sleep(Duration::from_millis(10));
    }
}

#[test]
fn killed_mid_spend_leaves_no_entry_and_no_lock() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let marker = dir.path().join("marker");
    {
        let ledger = Ledger::open(&db).unwrap();
        ledger.set_cap("h", "d", cap(3.0)).unwrap();
        ledger.try_spend("h", "d", &sgd(10), "committed").unwrap();
    }
    let mut child = spawn_child(&db, &marker, "hang");
    wait_for(&marker);
    child.kill().unwrap(); // SIGKILL on Unix: no destructors, no rollback by the child.
    child.wait().unwrap();
    let ledger = Ledger::open(&db).unwrap();
    let st = ledger.statement("h", "d").unwrap();
    assert_eq!(st.spends.len(), 1, "the killed spend must not be recorded");
    assert_eq!(st.spends[0].note, "committed");
    // The write lock died with the child: spending works at once.
    ledger
        .try_spend("h", "d", &sgd(10), "after the crash")
        .unwrap();
}

#[test]
fn killed_while_spending_in_a_loop_leaves_a_consistent_ledger() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("ledger.db");
    let marker = dir.path().join("marker");
    Ledger::open(&db)
        .unwrap()
        .set_cap("h", "d", cap(50.0))
        .unwrap();
    let mut child = spawn_child(&db, &marker, "loop");
    wait_for(&marker);
    std::thread::sleep(Duration::from_millis(700));
    child.kill().unwrap();
    child.wait().unwrap();
    let ledger = Ledger::open(&db).unwrap();
    let st = ledger.statement("h", "d").unwrap();
    assert!(
        !st.spends.is_empty(),
        "the child made no spend before it was killed"
    );
    // Every committed entry is whole, and the last recorded total matches recomposition.
    let last = st.spends.last().unwrap().epsilon_after;
    assert!((st.spent - last).abs() < 1e-9, "{} vs {last}", st.spent);
    ledger.try_spend("h", "d", &sgd(1), "after").unwrap();
}

#[test]
fn a_keyed_spend_is_charged_once_even_when_asked_again() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(&path).unwrap();
    ledger.set_cap("clinics/a", "wage", cap(3.0)).unwrap();
    let events = [DpEvent::gaussian(1.0, 20.0, 1).unwrap(), sgd(300)];
    let (first, charged) = ledger
        .try_spend_once("clinics/a", "wage", &events, "job j1")
        .unwrap();
    assert!(charged);
    assert_eq!(first.len(), 2);
    // The same job again, from a new handle as after a restart: nothing new is recorded.
    let reopened = Ledger::open(&path).unwrap();
    let (again, charged) = reopened
        .try_spend_once("clinics/a", "wage", &events, "job j1")
        .unwrap();
    assert!(!charged);
    assert_eq!(again, first);
    let st = reopened.statement("clinics/a", "wage").unwrap();
    assert_eq!(st.spends.len(), 2);
    // Another job is charged, and refused at the cap like any spend.
    assert!(
        reopened
            .try_spend_once("clinics/a", "wage", &events, "job j2")
            .unwrap()
            .1
    );
    let big = [sgd(100_000)];
    assert!(matches!(
        reopened
            .try_spend_once("clinics/a", "wage", &big, "job j3")
            .unwrap_err(),
        PrivacyError::BudgetExceeded { .. }
    ));
    assert_eq!(
        reopened
            .statement("clinics/a", "wage")
            .unwrap()
            .spends
            .len(),
        4
    );
}

#[test]
fn a_keyed_spend_offered_again_with_other_parameters_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    let ledger = Ledger::open(&path).unwrap();
    ledger.set_cap("clinics/a", "wage", cap(5.0)).unwrap();
    let events = [DpEvent::gaussian(1.0, 20.0, 1).unwrap(), sgd(300)];
    ledger
        .try_spend_once("clinics/a", "wage", &events, "job j1")
        .unwrap();
    // After a crash the same job comes back with more steps (or a smaller σ): running them
    // would release what the first charge never covered.
    for other in [
        vec![DpEvent::gaussian(1.0, 20.0, 1).unwrap(), sgd(600)],
        vec![sgd(300)],
        vec![DpEvent::gaussian(1.0, 20.0, 1).unwrap(), sgd(300), sgd(1)],
    ] {
        let err = Ledger::open(&path)
            .unwrap()
            .try_spend_once("clinics/a", "wage", &other, "job j1")
            .unwrap_err();
        assert!(matches!(err, PrivacyError::SpendMismatch { .. }), "{err}");
        assert!(err.to_string().contains("job j1"), "{err}");
    }
    assert_eq!(
        ledger.statement("clinics/a", "wage").unwrap().spends.len(),
        2,
        "nothing new recorded"
    );
}

#[cfg(unix)]
#[test]
fn a_ledger_is_private_to_its_owner_and_refused_if_others_can_write_it() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ledger.db");
    drop(Ledger::open(&path).unwrap());
    let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
    assert_eq!(mode, 0o600, "{mode:o}");
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o666)).unwrap();
    let e = Ledger::open(&path).unwrap_err().to_string();
    assert!(e.contains("chmod 600"), "{e}");
}
