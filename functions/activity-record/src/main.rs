//! The `activity-record` function as its own binary: its router, served per the Knative runtime
//! contract by `common::serve`.

fn main() -> std::process::ExitCode {
    common::serve::run_function(activity_record::NAME, activity_record::router)
}
