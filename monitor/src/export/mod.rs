//! Exports beside the event stream and the alert sinks: OpenTelemetry traces of tool calls
//! (`otlp.rs`, `--otlp-endpoint`).
pub mod otlp;
