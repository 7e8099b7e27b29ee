//! The `web` function as its own binary: the built browser app (`FRONTEND_DIR`), served
//! per the Knative runtime contract by `missive_app::function::run`.

fn main() -> std::process::ExitCode {
    web::main()
}
