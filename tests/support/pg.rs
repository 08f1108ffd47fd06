//! A PostgreSQL schema of its own per test, in the database
//! `HOOKCI_TEST_DATABASE_URL` names (default: the local server's `test`
//! database), so that tests run side by side on one server. The schema is
//! dropped when the guard goes.
#![allow(dead_code, reason = "each test binary uses a different part")]

use std::sync::atomic::{AtomicU64, Ordering};

/// The URL of the server tests use.
pub fn server_url() -> String {
    std::env::var("HOOKCI_TEST_DATABASE_URL")
        .ok()
        .filter(|u| !u.is_empty())
        .unwrap_or_else(|| "postgres://postgres@127.0.0.1:5432/test".to_owned())
}

/// An empty schema, and the URL that puts a connection in it.
pub struct Schema {
    /// The schema's name.
    pub name: String,
    /// The server URL with `search_path` set to the schema.
    pub url: String,
    server: String,
}

static N: AtomicU64 = AtomicU64::new(0);

/// `url` with `search_path` = `schema`, in URL or key=value form.
pub fn with_search_path(url: &str, schema: &str) -> String {
    if url.starts_with("postgres://") || url.starts_with("postgresql://") {
        let sep = if url.contains('?') { '&' } else { '?' };
        format!("{url}{sep}options=-c%20search_path%3D{schema}")
    } else {
        format!("{url} options='-c search_path={schema}'")
    }
}

impl Schema {
    /// A new schema on the test server; `None` (after saying why, or
    /// failing under `CI=true`) when no server answers.
    pub async fn create() -> Option<Schema> {
        let server = server_url();
        let (client, conn) = match tokio_postgres::connect(&server, tokio_postgres::NoTls).await {
            Ok(c) => c,
            Err(e) => {
                super::prereq::missing(&format!(
                    "no PostgreSQL at HOOKCI_TEST_DATABASE_URL or 127.0.0.1:5432 ({e})"
                ));
                return None;
            }
        };
        let task = tokio::spawn(conn);
        let name = format!(
            "hookci_t{}_{}_{}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed),
            rand::random::<u32>()
        );
        client
            .batch_execute(&format!("CREATE SCHEMA {name}"))
            .await
            .expect("create a test schema");
        drop(client);
        let _ = task.await;
        Some(Schema {
            url: with_search_path(&server, &name),
            name,
            server,
        })
    }

    /// Runs `sql` on the test server with the schema as search path.
    pub async fn execute(&self, sql: &str) {
        let (client, conn) = tokio_postgres::connect(&self.url, tokio_postgres::NoTls)
            .await
            .expect("connect");
        let task = tokio::spawn(conn);
        client.batch_execute(sql).await.expect("run SQL");
        drop(client);
        let _ = task.await;
    }
}

impl Drop for Schema {
    fn drop(&mut self) {
        let server = self.server.clone();
        let name = self.name.clone();
        // Drop may run inside a runtime: a thread of its own.
        let _ = std::thread::spawn(move || {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("runtime");
            rt.block_on(async move {
                if let Ok((client, conn)) =
                    tokio_postgres::connect(&server, tokio_postgres::NoTls).await
                {
                    let task = tokio::spawn(conn);
                    let _ = client
                        .batch_execute(&format!("DROP SCHEMA IF EXISTS {name} CASCADE"))
                        .await;
                    drop(client);
                    let _ = task.await;
                }
            });
        })
        .join();
    }
}
