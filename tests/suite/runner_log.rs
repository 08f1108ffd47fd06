//! Build logs: masking across writes and lines, the size cap, and followers
//! of a running log, against real files.

use hookci::runner::log::{LogFollower, LogWriter, follow_file};
use hookci::secret::Secret;
use std::path::Path;
use std::time::Duration;

fn secrets(values: &[&str]) -> Vec<Secret> {
    values.iter().map(|v| Secret::new(*v)).collect()
}

fn read(path: &Path) -> String {
    String::from_utf8(std::fs::read(path).unwrap()).unwrap()
}

/// The next chunk, or a failure if none arrives soon.
async fn next(follower: &mut LogFollower) -> Option<Vec<u8>> {
    tokio::time::timeout(Duration::from_secs(5), follower.next_chunk())
        .await
        .expect("a chunk in time")
        .unwrap()
}

/// True when the follower has nothing for now (it would wait).
async fn waits(follower: &mut LogFollower) -> bool {
    tokio::time::timeout(Duration::from_millis(100), follower.next_chunk())
        .await
        .is_err()
}

#[tokio::test]
async fn a_secret_split_across_two_writes_is_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut log = LogWriter::create(&path, &secrets(&["hunter2-s3cret"]), 1 << 20).unwrap();
    log.write(b"token: hunter2").await.unwrap();
    log.write(b"-s3cret done\n").await.unwrap();
    log.write(b"again hunter2-s3").await.unwrap();
    log.finish().await.unwrap();
    let text = read(&path);
    assert_eq!(text, "token: *** done\nagain hunter2-s3");
}

#[tokio::test]
async fn a_secret_split_at_every_byte_is_masked() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut log = LogWriter::create(&path, &secrets(&["hunter2"]), 1 << 20).unwrap();
    for b in b"a hunter2 b hunter2" {
        log.write(std::slice::from_ref(b)).await.unwrap();
    }
    log.finish().await.unwrap();
    assert_eq!(read(&path), "a *** b ***");
}

#[tokio::test]
async fn a_multi_line_secret_is_masked_whole_and_line_by_line() {
    let key = "-----BEGIN KEY-----\nMIIEowIBAAKCAQEAx1\n  b2c3d4e5f6  \nab\n-----END KEY-----";
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut log = LogWriter::create(&path, &secrets(&[key]), 1 << 20).unwrap();
    log.write(format!("whole: {key}\n").as_bytes())
        .await
        .unwrap();
    log.write(b"one line: MIIEowIBAAKC").await.unwrap();
    log.write(b"AQEAx1 and b2c3d4e5f6, short ab stays\n")
        .await
        .unwrap();
    log.finish().await.unwrap();
    let text = read(&path);
    assert_eq!(
        text, "whole: ***\none line: *** and ***, short ab stays\n",
        "lines under 4 characters are not masked on their own"
    );
}

#[tokio::test]
async fn nothing_is_held_back_that_cannot_start_a_secret() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let secret = "correct-horse-battery";
    let mut log = LogWriter::create(&path, &secrets(&[secret]), 1 << 20).unwrap();
    let mut follower = log.follow();

    log.write(b"progress 42%\n").await.unwrap();
    assert_eq!(next(&mut follower).await.unwrap(), b"progress 42%\n");

    // "corr" may be the start of the secret: only it waits.
    log.write(b"value: corr").await.unwrap();
    assert_eq!(next(&mut follower).await.unwrap(), b"value: ");
    assert!(waits(&mut follower).await);

    // A long output ending in a long prefix holds back at most longest - 1.
    let almost = &secret[..secret.len() - 1];
    log.write(format!("ect {almost}").as_bytes()).await.unwrap();
    let mut seen = Vec::new();
    while seen.len() < "correct ".len() {
        seen.extend(next(&mut follower).await.unwrap());
    }
    assert_eq!(seen, b"correct ");
    assert!(waits(&mut follower).await);
    assert_eq!(
        log.bytes_written(),
        (b"progress 42%\nvalue: correct ".len()) as u64,
        "held back: exactly the {} bytes that may still be the secret",
        secret.len() - 1
    );

    log.write(b"y!\n").await.unwrap();
    log.finish().await.unwrap();
    let mut rest = Vec::new();
    while let Some(chunk) = next(&mut follower).await {
        rest.extend(chunk);
    }
    assert_eq!(rest, b"***!\n", "a match across the hold-back is masked");
}

#[tokio::test]
async fn with_no_secrets_everything_passes_through_at_once() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut log = LogWriter::create(&path, &[], 1 << 20).unwrap();
    let mut follower = log.follow();
    log.write(b"a").await.unwrap();
    assert_eq!(next(&mut follower).await.unwrap(), b"a");
    log.finish().await.unwrap();
    assert_eq!(next(&mut follower).await, None);
}

#[tokio::test]
async fn the_cap_truncates_with_one_line_and_keeps_accepting_writes() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut log = LogWriter::create(&path, &secrets(&["s3cr3t"]), 100).unwrap();
    let line = [b'x'; 30];
    for _ in 0..10 {
        log.write(&line).await.unwrap();
    }
    assert!(log.is_truncated());
    for _ in 0..1000 {
        log.write(b"more output s3cr3t\n").await.unwrap();
    }
    log.line("==> step test exited 0 in 1s").await.unwrap();
    log.finish().await.unwrap();
    let text = read(&path);
    let expected = format!(
        "{}\n[hookci] log truncated: the build printed more than 100 bytes\n==> step test exited 0 in 1s\n",
        "x".repeat(100)
    );
    assert_eq!(text, expected);
}

#[tokio::test]
async fn a_follower_of_a_running_log_receives_chunks_as_written_and_ends_after_finish() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut log = LogWriter::create(&path, &secrets(&["pw"]), 1 << 20).unwrap();
    let mut follower = log.follow();
    assert!(waits(&mut follower).await, "nothing written yet");

    let reader = tokio::spawn({
        let mut follower = follower.clone();
        async move {
            let mut all = Vec::new();
            while let Some(chunk) = follower.next_chunk().await.unwrap() {
                assert!(chunk.len() <= 64 * 1024);
                all.extend(chunk);
            }
            all
        }
    });

    log.line("==> step build: make").await.unwrap();
    assert_eq!(
        next(&mut follower).await.unwrap(),
        b"==> step build: make\n"
    );
    log.write(b"compiling\n").await.unwrap();
    assert_eq!(next(&mut follower).await.unwrap(), b"compiling\n");
    let big = vec![b'z'; 200 * 1024];
    log.write(&big).await.unwrap();
    let mut got = 0;
    while got < big.len() {
        got += next(&mut follower).await.unwrap().len();
    }
    assert!(waits(&mut follower).await);
    log.finish().await.unwrap();
    assert_eq!(next(&mut follower).await, None);

    let all = reader.await.unwrap();
    assert_eq!(all, std::fs::read(&path).unwrap());

    // A follower that starts after the end reads it all, then ends.
    let mut late = follow_file(&path);
    let mut again = Vec::new();
    while let Some(chunk) = next(&mut late).await {
        again.extend(chunk);
    }
    assert_eq!(again, all);
}

#[tokio::test]
async fn a_follower_ends_when_the_writer_is_dropped_unfinished() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut log = LogWriter::create(&path, &[], 1 << 20).unwrap();
    let mut follower = log.follow();
    log.write(b"partial").await.unwrap();
    drop(log);
    assert_eq!(next(&mut follower).await.unwrap(), b"partial");
    assert_eq!(next(&mut follower).await, None);
}

#[tokio::test]
async fn hookci_own_lines_are_masked_too_and_start_on_a_line_of_their_own() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("log");
    let mut log = LogWriter::create(&path, &secrets(&["tok-123456"]), 1 << 20).unwrap();
    log.line("==> step deploy: curl -H tok-123456 x")
        .await
        .unwrap();
    log.write(b"no newline at the end, tok-12").await.unwrap();
    log.line("==> step deploy exited 0 in 1s").await.unwrap();
    log.finish().await.unwrap();
    assert_eq!(
        read(&path),
        "==> step deploy: curl -H *** x\nno newline at the end, tok-12\n==> step deploy exited 0 in 1s\n"
    );
}
