//! `tansu`, as its own binary runs it, with SASL mechanisms registered (see Cargo.toml).
#[tokio::main]
async fn main() -> std::process::ExitCode {
    match tansu_cli::Cli::main().await {
        Ok(tansu_sans_io::ErrorCode::None) => std::process::ExitCode::SUCCESS,
        Ok(code) => {
            eprintln!("tansu: {code}");
            std::process::ExitCode::FAILURE
        }
        Err(err) => {
            eprintln!("tansu: {err}");
            std::process::ExitCode::FAILURE
        }
    }
}
