//! A commit id in the PostgreSQL store that is not hex is an error when
//! read, never a default (the SQLite twin is a unit test in
//! `store::sqlite`).

use crate::pg;

use hookci::model::CommitId;
use hookci::store::{BuildOrigin, NewBuild, PgOptions, Store, StoreOptions};
use hookci::webhook::{PushEvent, RefKind};

#[tokio::test]
async fn a_postgres_build_row_whose_commit_id_is_not_hex_is_an_error() {
    let Some(schema) = pg::Schema::create().await else {
        return;
    };
    let pg = PgOptions {
        url: hookci::secret::Secret::new(schema.url.clone()),
        node: "a".to_owned(),
        pool_size: 2,
    };
    let options = StoreOptions {
        max_queued_builds: 100,
    };
    let store = Store::open_postgres(pg, options).await.expect("open");
    let after: CommitId = "B".repeat(40).parse().unwrap();
    let push = PushEvent {
        repo: "acme/app".into(),
        git_ref: "refs/heads/main".into(),
        kind: RefKind::Branch("main".into()),
        before: CommitId::ZERO,
        after: after.clone(),
        commit: Some(after.clone()),
        created: true,
        deleted: false,
        forced: false,
        clone_url: "https://git.example/acme/app.git".into(),
        ssh_url: None,
        web_url: None,
        message: "m".into(),
        pusher: "p".into(),
        pull_request: None,
    };
    let build = NewBuild {
        pipeline: "app".into(),
        push,
        path_filters: Vec::new(),
        supersede: false,
        waiting: false,
        report_context: None,
        pipeline_revision: None,
    };
    let origin = BuildOrigin {
        rebuild_of: None,
        triggered_by: "admin".into(),
        resume: None,
    };
    let id = store
        .queue_manual(build, None, origin)
        .await
        .expect("queue")
        .id;
    let read = store.build(id).await.expect("read").expect("the build");
    assert_eq!(read.commit_str(), "b".repeat(40));
    assert_eq!(read.before, CommitId::ZERO);
    assert!(read.created);

    let set = |column: &str, value: &str| {
        format!("UPDATE builds SET {column} = '{value}' WHERE id = {id}")
    };
    schema.execute(&set("commit_sha", "--upload-pack=x")).await;
    assert!(store.build(id).await.is_err());
    schema.execute(&set("commit_sha", "")).await;
    assert_eq!(
        store
            .build(id)
            .await
            .expect("read")
            .expect("the build")
            .commit,
        None
    );
    schema.execute(&set("before_sha", "")).await;
    assert!(store.build(id).await.is_err());
    schema.execute(&set("before_sha", "0000")).await;
    schema.execute(&set("after_sha", "abc/def")).await;
    assert!(store.build(id).await.is_err());
}
