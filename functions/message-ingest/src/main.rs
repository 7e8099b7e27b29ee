//! The `message-ingest` function as its own binary: its router, served per the Knative runtime
//! contract by `common::serve`.

fn main() -> std::process::ExitCode {
    common::serve::run_function(message_ingest::NAME, message_ingest::router)
}
