//! Serving the simulator over TCP or a Unix socket, with abrupt shutdown and restart.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};

use axum::serve::Listener;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, UnixListener};
use tokio::task::JoinHandle;
use tokio_util::sync::{CancellationToken, WaitForCancellationFutureOwned};

use super::Inner;
use super::errors::Transport;
use super::http::router;

/// A connection that fails every read and write once its server kills connections, so that
/// hyper drops it at once (like a daemon process going away).
pub(crate) struct KillableIo<T> {
    io: T,
    kill: CancellationToken,
    killed: Pin<Box<WaitForCancellationFutureOwned>>,
}

impl<T> KillableIo<T> {
    fn new(io: T, kill: CancellationToken) -> KillableIo<T> {
        let killed = Box::pin(kill.clone().cancelled_owned());
        KillableIo { io, kill, killed }
    }

    fn check_killed(&mut self, cx: &mut Context<'_>) -> io::Result<()> {
        if self.kill.is_cancelled() || self.killed.as_mut().poll(cx).is_ready() {
            return Err(io::Error::new(
                io::ErrorKind::ConnectionReset,
                "simulator connection killed",
            ));
        }
        Ok(())
    }
}

impl<T: AsyncRead + Unpin> AsyncRead for KillableIo<T> {
    fn poll_read(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        Pin::new(&mut this.io).poll_read(cx, buf)
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for KillableIo<T> {
    fn poll_write(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        Pin::new(&mut this.io).poll_write(cx, buf)
    }

    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        this.check_killed(cx)?;
        Pin::new(&mut this.io).poll_flush(cx)
    }

    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().io).poll_shutdown(cx)
    }
}

/// A listener whose accepted connections can all be killed at once.
struct KillableListener<L> {
    listener: L,
    kill: CancellationToken,
}

impl<L: Listener> Listener for KillableListener<L> {
    type Io = KillableIo<L::Io>;
    type Addr = L::Addr;

    async fn accept(&mut self) -> (Self::Io, Self::Addr) {
        let (io, addr) = self.listener.accept().await;
        (KillableIo::new(io, self.kill.clone()), addr)
    }

    fn local_addr(&self) -> io::Result<Self::Addr> {
        self.listener.local_addr()
    }
}

#[derive(Debug, Clone)]
enum Endpoint {
    Tcp(SocketAddr),
    Unix(PathBuf),
}

/// One running server of a [`super::Simulator`].
pub struct SimServer {
    inner: Arc<Inner>,
    endpoint: Endpoint,
    stop: CancellationToken,
    kill: CancellationToken,
    task: JoinHandle<()>,
}

impl std::fmt::Debug for SimServer {
    fn fmt(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        formatter
            .debug_struct("SimServer")
            .field("endpoint", &self.endpoint)
            .finish_non_exhaustive()
    }
}

impl SimServer {
    pub(crate) async fn start_tcp(inner: Arc<Inner>, addr: SocketAddr) -> io::Result<SimServer> {
        let listener = TcpListener::bind(addr).await?;
        let local = listener.local_addr()?;
        let listener = axum::serve::ListenerExt::tap_io(listener, |stream| {
            // Small request/response pairs: never wait for Nagle.
            let _ = stream.set_nodelay(true);
        });
        Ok(SimServer::serve(
            inner,
            listener,
            Transport::Tcp,
            Endpoint::Tcp(local),
        ))
    }

    pub(crate) async fn start_unix(inner: Arc<Inner>, path: PathBuf) -> io::Result<SimServer> {
        match std::fs::remove_file(&path) {
            Ok(()) => {}
            Err(error) if error.kind() == io::ErrorKind::NotFound => {}
            Err(error) => return Err(error),
        }
        let listener = UnixListener::bind(&path)?;
        {
            use std::os::unix::fs::PermissionsExt;
            std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600))?;
        }
        Ok(SimServer::serve(
            inner,
            listener,
            Transport::Unix,
            Endpoint::Unix(path),
        ))
    }

    /// The one serve path of both transports: the router over a listener whose connections
    /// can all be killed, until `stop` is cancelled.
    fn serve<L>(
        inner: Arc<Inner>,
        listener: L,
        transport: Transport,
        endpoint: Endpoint,
    ) -> SimServer
    where
        L: Listener,
        L::Addr: std::fmt::Debug,
    {
        let (stop, kill) = (CancellationToken::new(), CancellationToken::new());
        let app = router(inner.clone(), transport, kill.clone());
        let listener = KillableListener {
            listener,
            kill: kill.clone(),
        };
        let serving =
            axum::serve(listener, app).with_graceful_shutdown(stop.clone().cancelled_owned());
        let task = tokio::spawn(async move {
            let _ = serving.await;
        });
        SimServer {
            inner,
            endpoint,
            stop,
            kill,
            task,
        }
    }

    pub fn local_addr(&self) -> Option<SocketAddr> {
        match &self.endpoint {
            Endpoint::Tcp(addr) => Some(*addr),
            Endpoint::Unix(_) => None,
        }
    }

    pub fn socket_path(&self) -> Option<&Path> {
        match &self.endpoint {
            Endpoint::Tcp(_) => None,
            Endpoint::Unix(path) => Some(path),
        }
    }

    /// `http://127.0.0.1:PORT` over TCP, `http://unix` over a socket.
    pub fn base_url(&self) -> String {
        match &self.endpoint {
            Endpoint::Tcp(addr) => format!("http://{addr}"),
            Endpoint::Unix(_) => "http://unix".to_owned(),
        }
    }

    /// Closes every open connection abruptly and stops listening.
    async fn stop_serving(self) -> (Arc<Inner>, Endpoint) {
        self.kill.cancel();
        self.stop.cancel();
        let _ = self.task.await;
        (self.inner, self.endpoint)
    }

    /// Stops serving: open connections (long polls included) are cut, the socket file removed.
    pub async fn shutdown(self) {
        let (_, endpoint) = self.stop_serving().await;
        if let Endpoint::Unix(path) = endpoint {
            let _ = std::fs::remove_file(path);
        }
    }

    /// Simulates a daemon restart: cuts every connection, loses the in-memory channel queues,
    /// sweeps expired leases once (as the daemon does at boot) and serves again on the same
    /// address or path. Tasks, runs, unexpired leases and sessions persist.
    pub async fn restart(self) -> io::Result<SimServer> {
        let (inner, endpoint) = self.stop_serving().await;
        {
            // Like the daemon at boot: queues are gone, expired leases are swept once.
            let now = inner.now();
            let mut state = inner.state();
            state.drop_channel_queues();
            state.sweep(now);
        }
        match endpoint {
            Endpoint::Tcp(addr) => SimServer::start_tcp(inner, addr).await,
            Endpoint::Unix(path) => SimServer::start_unix(inner, path).await,
        }
    }
}

#[cfg(test)]
mod tests {
    use crate::dev::sim::{SimConfig, Simulator};

    #[tokio::test]
    async fn the_simulators_unix_socket_is_its_owners_only() {
        use std::os::unix::fs::PermissionsExt;
        let dir = tempfile::tempdir().expect("a temporary directory");
        let path = dir.path().join("agh.sock");
        let sim = Simulator::new(SimConfig::default());
        let server = sim.serve_unix(&path).await.expect("serves");
        let mode = std::fs::metadata(&path)
            .expect("the socket exists")
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        drop(server);
    }
}
