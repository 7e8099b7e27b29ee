//! The `auth-signup` function as its own binary: its router, served per the Knative runtime
//! contract by `common::serve`.

fn main() -> std::process::ExitCode {
    common::serve::run_function(auth_signup::NAME, auth_signup::router)
}
