//! `fab`: the server and admin CLI. Everything happens in the library's [`fab::cli`].

use clap::Parser as _;
use std::process::ExitCode;

#[tokio::main]
async fn main() -> ExitCode {
    let cli = fab::cli::Cli::parse();
    fab::cli::run(cli, fab::settings::process_env()).await
}
