//! The `message-create` function as its own binary: its router, served per the Knative runtime
//! contract by `missive_app::function::run`.

fn main() -> std::process::ExitCode {
    // Only what serving needs: the registry entry's OpenAPI part (utoipa's document
    // building, about 0.2 MB) stays out of the function's binary.
    const F: missive_app::Function = message_create::FUNCTION;
    missive_app::function::run::<{ F.publishes }>(F.name, F.trigger, F.router)
}
