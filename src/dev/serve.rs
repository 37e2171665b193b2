//! `agh-worker sim`: serves the built-in AGH simulator until SIGINT/SIGTERM.

use std::net::{Ipv4Addr, SocketAddr};
use std::process::ExitCode;

use crate::cli::SimArgs;
use crate::dev::sim::{SimConfig, run_standalone};

/// Serves the simulator as the flags ask (TCP 127.0.0.1:2123 when neither flag is given).
pub async fn serve(args: &SimArgs) -> ExitCode {
    let listen = match (args.listen, &args.socket) {
        (None, None) => Some(SocketAddr::from((Ipv4Addr::LOCALHOST, 2123))),
        (listen, _) => listen,
    };
    let stop = async {
        let mut term =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(term) => term,
                Err(_) => return std::future::pending().await,
            };
        tokio::select! {
            _ = tokio::signal::ctrl_c() => {}
            _ = term.recv() => {}
        }
    };
    match run_standalone(listen, args.socket.clone(), SimConfig::default(), stop).await {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("agh-worker sim: cannot serve: {err}");
            ExitCode::FAILURE
        }
    }
}
