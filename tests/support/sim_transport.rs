//! The built-in simulator served over loopback TCP or a Unix socket, with the endpoint a client
//! uses to reach it, so a behaviour test can run over both transports.

use std::path::Path;

use agh_worker::api::Endpoint;
use agh_worker::dev::sim::{SimServer, Simulator};

/// How the worker reaches the simulator.
#[derive(Clone, Copy, Debug)]
pub enum Via {
    Tcp,
    Unix,
}

/// Serves `sim` over `via` (a Unix socket is made in `dir`); answers the server and its endpoint.
pub async fn serve(sim: &Simulator, via: Via, dir: &Path) -> (SimServer, Endpoint) {
    let server = match via {
        Via::Tcp => sim
            .serve_tcp("127.0.0.1:0".parse().expect("loopback address"))
            .await
            .expect("serve over tcp"),
        Via::Unix => sim
            .serve_unix(&dir.join("agh.sock"))
            .await
            .expect("serve over a unix socket"),
    };
    let endpoint = match server.socket_path() {
        Some(path) => Endpoint::Unix(path.to_path_buf()),
        None => Endpoint::parse(&server.base_url()).expect("endpoint"),
    };
    (server, endpoint)
}
