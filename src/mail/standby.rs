//! The SMTP door of a standby replica (a server whose PostgreSQL store another one holds): every
//! connection is told `421` at once and closed. A sender treats that as "try later" and moves to
//! its next MX record, the replica that holds the store; nothing is accepted here, so nothing
//! can be lost here.

use std::future::Future;

use tokio::io::AsyncWriteExt as _;
use tokio::net::TcpListener;

/// Refuses every connection on `listener` with `421` until `stop` completes.
pub async fn refuse(listener: TcpListener, hostname: &str, stop: impl Future<Output = ()>) {
    let line = format!("421 4.3.2 {hostname} is a standby replica: try another MX or later\r\n");
    let mut stop = std::pin::pin!(stop);
    loop {
        let (mut stream, _) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(pair) => pair,
                Err(_) => {
                    tokio::time::sleep(std::time::Duration::from_millis(20)).await;
                    continue;
                }
            },
            () = &mut stop => return,
        };
        // A fresh socket's send buffer takes the line without waiting; a peer that cannot take
        // even that is not waited for.
        let _ = tokio::time::timeout(
            std::time::Duration::from_secs(1),
            stream.write_all(line.as_bytes()),
        )
        .await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncReadExt as _;

    #[tokio::test]
    async fn a_standby_tells_every_sender_to_try_later() {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
        let addr = listener.local_addr().expect("addr");
        let (tx, rx) = tokio::sync::oneshot::channel::<()>();
        let task = tokio::spawn(async move {
            refuse(listener, "mx2.test", async {
                let _ = rx.await;
            })
            .await;
        });
        for _ in 0..2 {
            let mut client = tokio::net::TcpStream::connect(addr).await.expect("connect");
            let mut said = String::new();
            client.read_to_string(&mut said).await.expect("read");
            assert_eq!(
                said,
                "421 4.3.2 mx2.test is a standby replica: try another MX or later\r\n"
            );
        }
        let _ = tx.send(());
        task.await.expect("stops");
    }
}
