//! The `message-delete` function as its own binary: its router, served per the Knative runtime
//! contract by `missive_app::function::run`.

fn main() -> std::process::ExitCode {
    missive_app::function::run(&message_delete::FUNCTION)
}
