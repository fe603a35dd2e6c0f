//! `mcpmon run`'s start-up and main loop: loads the sensors, wires the stages (ring reader,
//! pipeline, writer, control socket, metrics, gate and persistence watch), then selects over
//! their inputs until SIGTERM. The stages themselves live in the sibling modules.
use std::time::Duration;

use anyhow::Context as _;
use tokio::{
    signal::unix::{signal, SignalKind},
    sync::{mpsc, watch},
};

use super::{policy, Pipeline};

/// Tells systemd the daemon is ready (`Type=notify`): sensors loaded, rules in force, discovery
/// set, the control socket served. Without `NOTIFY_SOCKET` (not under systemd) nothing happens.
fn notify_ready() {
    use std::os::{linux::net::SocketAddrExt, unix::net::{SocketAddr, UnixDatagram}};
    let Some(path) = std::env::var_os("NOTIFY_SOCKET") else { return };
    let bytes = path.as_encoded_bytes();
    let addr = match bytes.strip_prefix(b"@") {
        Some(name) => SocketAddr::from_abstract_name(name),
        None => SocketAddr::from_pathname(&path),
    };
    let sent = addr.and_then(|a| UnixDatagram::unbound()?.send_to_addr(b"READY=1\n", &a));
    if let Err(e) = sent {
        tracing::warn!(error = %e, "could not tell systemd the daemon is ready");
    }
}
use crate::{
    cli::RunArgs,
    control::{
        server::{serve, ControlListener},
        ControlMsg,
    },
    discovery::adopt::Discoverer,
    sys::procfs,
    events::{self, reader::Batch},
    output,
    probes::{SensorConfig, Sensors},
    tracker::Discovery,
};

pub async fn run(args: RunArgs) -> anyhow::Result<()> {
    // Before anything the daemon leaves on disk (the control socket's directory): a SIGTERM
    // during the seconds of start-up then waits in its stream, and the loop below shuts down as
    // after any other, instead of the default action killing the daemon with its state in place.
    let mut sigterm = signal(SignalKind::terminate())?;
    let mut sigint = signal(SignalKind::interrupt())?;
    let mut sighup = signal(SignalKind::hangup())?;
    let ringbuf_bytes = match args.ringbuf_bytes {
        Some(b) => Some(b).filter(|b| b.is_power_of_two() && *b >= 4096).context("--ringbuf-bytes must be a power of two, at least 4096")?,
        None => args.ringbuf_mib.checked_mul(1 << 20).filter(|b| b.is_power_of_two()).context("--ringbuf-mib must be a power of two")?,
    };
    let mut sensors = Sensors::load(&SensorConfig { ringbuf_bytes, daemon_tgid: std::process::id(), observe: args.observe, tracked_max: args.tracked_max, stdio_pipes_max: args.stdio_pipes_max, ebpf_log: args.ebpf_log })?;
    sensors.report.log();
    if let Err(e) = sensors.start_guard() {
        tracing::warn!(error = %e, "hold guard not started: a daemon killed while it holds a candidate at exec would leave that process stopped");
    }
    tracing::info!(count = sensors.attached.len(), hooks = %sensors.attached.join(", "), "hooks attached");
    // `path=` is what the VM scenario and benchmark grep (tests/vm/*.sh). The on-demand hooks
    // attach only while a server is tracked.
    let on_demand = sensors.on_demand_hooks();
    let path = if sensors.fast_path { "fentry/fexit" } else { "tracepoints" };
    tracing::info!(path = %path, on_demand = on_demand.len(), hooks = %on_demand.join(", "), "syscall observation");

    // The first line of the stream: what this kernel let the daemon load (`probes/loaded.rs`).
    let mut loaded = sensors.loaded();

    sensors.set_handshake_discovery(args.handshake_discovery == crate::cli::Switch::On).context("--handshake-discovery")?;
    let gate_maps = sensors.gate_maps();
    // A second TRACKED handle for the persistence watch (before the tracker takes the map).
    let persist_maps = sensors.gate_maps().and_then(|m| Ok((m.tracked, sensors.exited_map()?)));
    let tracker = crate::tracker::Tracker::from_maps(sensors.tracker_maps()?);
    let ring = sensors.take_events()?;
    let lost = sensors.take_lost()?;

    let sink = output::open_sink(&args.events).await?;
    // Batches of lines (up to 64 KiB each, `daemon/emit.rs`): at most 4 MiB wait for the writer.
    let (line_tx, line_rx) = mpsc::channel::<Vec<u8>>(64);
    let spare = output::Spare::default();
    let health = std::sync::Arc::new(output::WriterHealth::default());
    let writer = tokio::spawn(output::writer(sink, line_rx, spare.clone(), health.clone()));
    // Up to 64 drains of up to 256 events (and 128 KiB of captured bytes) wait for the
    // pipeline; then the reader waits, and the ring fills (and the kernel counts what it
    // cannot deliver).
    let (ev_tx, mut ev_rx) = mpsc::channel::<Batch>(64);
    let (shutdown_tx, shutdown_rx) = watch::channel(false);
    let reader = events::reader::spawn(ring, ev_tx, shutdown_rx.clone()).context("starting the ring reader")?;

    let listener = ControlListener::bind(&args.socket)?;
    let (req_tx, mut req_rx) = mpsc::channel::<ControlMsg>(64);
    let tail = tokio::sync::broadcast::channel::<String>(4096).0;
    let metrics = std::sync::Arc::new(std::sync::Mutex::new(crate::metrics::Metrics::new()));
    let metrics_task = match args.metrics_addr() {
        Some(addr) => {
            let l = crate::metrics::http::bind(addr).await.with_context(|| format!("--metrics-addr {addr}"))?;
            tracing::info!(url = %format!("http://{}/metrics", l.local_addr().map(|a| a.to_string()).unwrap_or_default()), "metrics endpoint");
            Some(tokio::spawn(crate::metrics::http::serve(l, metrics.clone(), shutdown_rx.clone())))
        }
        None => None,
    };
    let sinks = crate::alerts::Sinks::start(&args.sink_config(), metrics.clone()).await?;

    let mut kernel_policy = crate::actions::kernel::KernelPolicy::from_maps(sensors.policy_maps()?);
    kernel_policy.set_on_loss_kill(args.on_loss == crate::cli::OnLoss::Kill).context("--on-loss")?;
    kernel_policy.set_fold_window_ms(args.fold_window_ms).context("--fold-window-ms")?;
    let disc = Discoverer::new(args.passwd.clone(), args.project_root.clone(), &args.client_comm);
    // Never by name: a tracked process is killable whatever it calls itself (prctl).
    let guard = crate::actions::kill::Guard::new(std::process::id());
    let rules_dir = args.rules_dir();
    let mut policy = policy::Policy::load(&rules_dir, &args.passwd, kernel_policy, args.dry_run, guard)
        .with_context(|| format!("loading rules from {}", rules_dir.display()))?;
    let (gate_tx, mut gate_rx) = mpsc::channel::<crate::gate::GateRecord>(1024);
    match gate_maps.map_err(|e| e.to_string()).and_then(|m| crate::gate::Gate::start(m, gate_tx.clone(), std::process::id()).map_err(|e| e.to_string())) {
        Ok(g) => {
            policy.gate = Some(g);
            policy.sync_kernel().context("open gate: first sync")?;
            tracing::info!("open gate: read-protected files are refused before an fd exists (fanotify permission events)");
        }
        // Measured with fanotify_init refused (the secrets suite): 157 of 200 keys made, copied,
        // linked or renamed and opened at once were read; with the gate, none. Now the kernel
        // refuses unseen files in secret directories (`protect/unseen.rs`), and a grant of
        // io_uring is withheld (`honoured`: a ring read a key through it).
        Err(e) => tracing::warn!(error = %e, "open gate unavailable; read-protected files fall back to the kill at the open's exit, from the plan's kernel map: a file in a secret directory (~/.ssh) that no re-plan has seen yet is refused too, harmless ones included, until the watch re-plans; a key created outside one (a literal name such as ~/.netrc) is read until then; io_uring grants are withheld (a ring's opens would pass no check)"),
    }
    let quarantine = args.state_dir.join("quarantine");
    match persist_maps.map_err(|e| e.to_string()).and_then(|m| crate::gate::persist::PersistWatch::start(m, gate_tx.clone(), quarantine.clone()).map_err(|e| e.to_string())) {
        Ok(w) => {
            policy.persist = Some(w);
            policy.sync_kernel().context("persistence watch: first sync")?;
            tracing::info!(quarantine = %quarantine.display(), "persistence watch: entries renamed, linked or made in protected directories are quarantined");
        }
        Err(e) => tracing::warn!(error = %e, "persistence watch unavailable; only opens in protected directories are judged"),
    }
    let mut watcher = crate::watch::Watcher::new(&args.passwd).context("inotify for the user database and protected directories")?;
    watcher.set(&policy.plan.watch, &policy.plan.watch_new_dirs);
    tracing::info!(policy = %policy.summary(), "rules loaded");
    let policy_summary = policy.summary();
    if let Ok(mut m) = metrics.lock() {
        let sinks: Vec<&str> = [args.alerts_file.as_ref().map(|_| "file"), args.alert_webhook.as_ref().map(|_| "webhook")].into_iter().flatten().collect();
        m.zero(&policy.alert_labels(), &sinks);
    }
    let mut pipeline = Pipeline::new(sensors, tracker, disc, lost, (line_tx, spare, health));
    pipeline.on_loss = args.on_loss;
    pipeline.detach_pause = Duration::from_millis(args.detach_pause_ms);
    pipeline.policy = Some(policy);
    if let Some(url) = &args.otlp_endpoint {
        pipeline.out.otlp = Some(crate::export::otlp::Otlp::start(url, args.otlp_queue, &pipeline.out.host, metrics.clone())?);
    }
    pipeline.out.configure(metrics, sinks, tail.clone(), Duration::from_secs(args.alert_throttle_secs), Duration::from_secs(args.incident_quiet_secs));
    pipeline.out.alert_format = args.alert_format;
    if let Some(dir) = args.profiles_dir() {
        let mode = if args.learn { crate::rules::profile::Mode::Learn } else { crate::rules::profile::Mode::Enforce };
        let p = crate::rules::profile::Profiles::open(&dir, mode).map_err(|e| anyhow::anyhow!("profiles: {e}"))?;
        tracing::info!(mode = ?mode, dir = %dir.display(), "profiles");
        pipeline.profiles = Some(p);
    }
    loaded["open_gate"] = policy_summary["open_gate"].is_object().into();
    pipeline.out.emit(crate::output::Record::SensorsLoaded { time: Pipeline::now(), loaded }).await;
    pipeline.out.emit(crate::output::Record::RulesLoaded { time: Pipeline::now(), policy: policy_summary }).await;
    let pins = args.state_dir.join("tool-pins.json");
    pipeline.tools_watch.pins = Some(crate::toolcheck::pin::PinStore::open(&pins).with_context(|| "tool pins")?);
    pipeline.start_discovery().await;
    for &pid in &args.track_pid {
        let name = args
            .track_name
            .clone()
            .or_else(|| procfs::process_info(pid).map(|i| i.comm))
            .unwrap_or_else(|| format!("pid-{pid}"));
        pipeline.track(pid, &name, Discovery::TrackPid, 0).await.with_context(|| format!("--track-pid {pid}"))?;
    }
    // The gauges (rules in force, losses by reason) before the first tick: a scrape right after
    // the daemon answers finds every series with a sample, not only after a second.
    pipeline.metrics_tick(false).await;
    // Served only now: a ping answered means discovery is set (candidates are tracked at exec).
    // Connections made earlier wait in the socket's backlog.
    let control = tokio::spawn(serve(listener, req_tx, shutdown_rx.clone(), tail.clone()));

    let mut profile_tick = 0u64;
    let mut tick = tokio::time::interval(Duration::from_secs(1));
    pipeline.out.flush_lines().await;
    tracing::info!(socket = %args.socket.display(), events = %args.events, "ready: control socket open");
    notify_ready();
    loop {
        // Lines are handed to the writer in batches: whatever is pending goes out as soon as
        // no kernel event waits, so a quiet moment never holds a line back, and after
        // `BATCH_HOLD` at the latest while events keep coming.
        if ev_rx.is_empty() || pipeline.out.lines_held() {
            pipeline.out.flush_lines().await;
        }
        let replan_due = pipeline.replan_due();
        tokio::select! {
            biased;
            // Changes to users and protected places come first: the plan must be current
            // before anything that follows them is judged.
            Ok(c) = watcher.next() => pipeline.on_watch_and_aim(&mut watcher, c, false).await,
            Some(rec) = gate_rx.recv() => {
                // A refusal may go out as an event line too (`look_for_tail`).
                pipeline.out.look_for_tail();
                pipeline.on_gate(rec).await
            }
            Some(msg) = req_rx.recv() => {
                // A new server's first instruction must meet the current plan: take any
                // change already queued (a home or key made just before it) first.
                if let Some(c) = watcher.poll_now().or(pipeline.replan_pending()) {
                    pipeline.on_watch_and_aim(&mut watcher, c, true).await;
                }
                pipeline.on_control(msg).await
            }
            // A change deferred by the rate limit, planned as soon as it may be.
            _ = tokio::time::sleep_until(replan_due.unwrap_or_else(tokio::time::Instant::now)), if replan_due.is_some() => {
                if let Some(c) = pipeline.replan_pending() {
                    pipeline.on_watch_and_aim(&mut watcher, c, true).await;
                }
            }
            _ = tick.tick() => {
                pipeline.check_lost().await;
                pipeline.discovery_tick().await;
                pipeline.reconcile().await;
                pipeline.check_idle().await;
                pipeline.sync_servers();
                if pipeline.rescan_protected().await {
                    pipeline.aim(&mut watcher);
                }
                pipeline.metrics_tick(false).await;
                profile_tick += 1;
                if profile_tick.is_multiple_of(10) {
                    pipeline.save_profiles();
                }
            }
            _ = sighup.recv() => {
                pipeline.reload_rules().await;
                pipeline.aim(&mut watcher);
            }
            _ = sigterm.recv() => { tracing::info!(signal = "SIGTERM", "shutting down"); break; }
            _ = sigint.recv() => { tracing::info!(signal = "SIGINT", "shutting down"); break; }
            // Kernel events last: under a flood one always waits, and ahead of the rest they
            // starved everything after them (a `mcpmon exec` went unanswered until it gave up,
            // the loss check and SIGTERM waited for the flood to end). One drain of the ring
            // at a time (up to 256 events, half a millisecond of work under a flood), so that
            // polling the branches above (signals, timer, channels) is paid once per batch.
            Some(batch) = ev_rx.recv() => {
                pipeline.out.look_for_tail();
                for ev in batch {
                    pipeline.on_event(ev).await;
                }
            }
        }
    }

    // From here on nobody would continue a process the kernel holds at exec.
    pipeline.sensors.stop_holding();
    let _ = shutdown_tx.send(true);
    // It stops at once: between drains it waits on the ring, a timer or the channel, and the
    // stop is one more branch of that wait.
    let _ = reader.join();
    pipeline.out.look_for_tail();
    while let Ok(batch) = ev_rx.try_recv() {
        for ev in batch {
            pipeline.on_event(ev).await;
        }
    }
    pipeline.check_lost().await;
    pipeline.save_profiles();
    pipeline.metrics_tick(true).await;
    pipeline.summary().await;
    pipeline.out.flush_lines().await;
    if let Some(s) = pipeline.out.sinks.take() {
        s.close().await;
    }
    if let Some(o) = pipeline.out.otlp.take() {
        o.close().await;
    }
    if let Some(t) = metrics_task {
        let _ = t.await;
    }
    let sensors = pipeline.into_sensors();
    let _ = control.await;
    let _ = writer.await;
    // Unloads every program and link: nothing of mcpmon stays in the kernel.
    drop(sensors);
    tracing::info!("sensors detached");
    Ok(())
}
