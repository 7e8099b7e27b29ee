//! The `auth-me` function as its own binary: its router, served per the Knative runtime
//! contract by `common::serve`.

fn main() -> std::process::ExitCode {
    common::serve::run_function(auth_me::NAME, auth_me::router)
}
