//! The `outbox-relay` function as its own binary: its router, served per the Knative runtime
//! contract by `common::serve`.

fn main() -> std::process::ExitCode {
    common::serve::run_function(outbox_relay::NAME, outbox_relay::router)
}
