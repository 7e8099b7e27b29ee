//! The `message-search` function as its own binary: its router, served per the Knative runtime
//! contract by `common::serve`.

fn main() -> std::process::ExitCode {
    common::serve::run_function(message_search::NAME, message_search::router)
}
