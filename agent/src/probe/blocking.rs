//! Blocking probe bodies (`/proc` scans, `statvfs`) on tokio's blocking pool, under the probe
//! timeout: a read hung in the kernel (a dead NFS mount, a process stuck in `D` state) makes that
//! probe critical on time instead of stalling the agent. A hung call is never started again: until
//! it returns, the probe answers "still blocked" at once, so each probe holds at most one stuck
//! thread. The probe's state goes into the call and comes back with its answer. What is known
//! not to block (a remembered pid's `/proc/PID/stat`) runs on the runtime's thread instead
//! ([`OffThread::inline`]): a call costs two thread switches, the bulk of a cycle's CPU here.

use std::time::{Duration, SystemTime};

use tokio::task::{JoinError, JoinHandle};
use tokio::time::Instant;

use super::{Outcome, ProbeId, fmt_duration};
use crate::result::ProbeResult;

/// One probe's blocking body: its state between calls, or the call that has it.
#[derive(Debug)]
pub struct OffThread<S, T = ProbeResult> {
    id: ProbeId,
    /// `None` while a call has it.
    state: Option<S>,
    call: Option<Call<S, T>>,
}

#[derive(Debug)]
struct Call<S, T> {
    since: Instant,
    handle: JoinHandle<(S, T)>,
}

impl<S: Send + 'static, T: Send + 'static> OffThread<S, T> {
    pub fn new(id: ProbeId, state: S) -> Self {
        OffThread {
            id,
            state: Some(state),
            call: None,
        }
    }

    /// Runs `body` on the state off the runtime's threads and waits at most `timeout` for its
    /// answer. Without one, the `critical` result to report instead (marked unanswered): "timed
    /// out after …", or "still blocked for …" while an earlier call has not returned, in which
    /// case nothing new is started. Dropping the returned future mid-wait loses nothing: the call
    /// is kept like one that timed out.
    pub async fn call<F>(&mut self, timeout: Duration, body: F) -> Result<T, ProbeResult>
    where
        F: FnOnce(&mut S) -> T + Send + 'static,
    {
        if let Some(call) = &mut self.call {
            if !call.handle.is_finished() {
                let blocked = Duration::from_secs(call.since.elapsed().as_secs());
                return Err(self
                    .id
                    .critical(format!(
                        "still blocked for {}: the call that timed out has not returned",
                        fmt_duration(blocked)
                    ))
                    .unanswered());
            }
            // Its late answer is stale: only the state is kept.
            let joined = (&mut call.handle).await;
            self.call = None;
            self.take_back(joined);
        }
        let Some(mut state) = self.state.take() else {
            return Err(self.lost());
        };
        let handle = tokio::task::spawn_blocking(move || {
            let answer = body(&mut state);
            (state, answer)
        });
        let call = self.call.insert(Call {
            since: Instant::now(),
            handle,
        });
        match tokio::time::timeout(timeout, &mut call.handle).await {
            Ok(joined) => {
                self.call = None;
                self.take_back(joined).ok_or_else(|| self.lost())
            }
            Err(_) => Err(self
                .id
                .critical(format!("timed out after {}", fmt_duration(timeout)))
                .unanswered()),
        }
    }

    fn take_back(&mut self, joined: Result<(S, T), JoinError>) -> Option<T> {
        match joined {
            Ok((state, answer)) => {
                self.state = Some(state);
                Some(answer)
            }
            // A probe that panics is a bug, as when it ran on the runtime's thread.
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            // Cancelled: only when the runtime shuts down before the call ran.
            Err(_) => None,
        }
    }

    fn lost(&self) -> ProbeResult {
        self.id
            .unknown("the probe's state was lost when the runtime shut down")
    }
}

impl<S: Send + 'static, T: Send + 'static> OffThread<S, T> {
    /// Runs `fast` on the state on the caller's thread, for a read known not to block, when no
    /// call has the state. `None` (from `fast`, or a call in flight): use [`OffThread::call`].
    /// It spares the two thread switches of a call in the common case (a remembered pid).
    pub fn inline<R>(&mut self, fast: impl FnOnce(&mut S) -> Option<R>) -> Option<R> {
        if self.call.is_some() {
            return None;
        }
        fast(self.state.as_mut()?)
    }
}

impl<S: Send + 'static> OffThread<S> {
    /// [`OffThread::call`] for a probe body: its result, or the one saying why there is none,
    /// stamped with its start and duration.
    pub async fn probe<F>(&mut self, timeout: Duration, body: F) -> ProbeResult
    where
        F: FnOnce(&mut S) -> ProbeResult + Send + 'static,
    {
        let started = SystemTime::now();
        let t0 = Instant::now();
        let (Ok(result) | Err(result)) = self.call(timeout, body).await;
        result.timed(started, t0.elapsed())
    }

    /// [`OffThread::probe`], answered on the caller's thread by `fast` when it can
    /// ([`OffThread::inline`]).
    pub async fn probe_fast_first<F>(
        &mut self,
        timeout: Duration,
        fast: impl FnOnce(&mut S) -> Option<ProbeResult>,
        body: F,
    ) -> ProbeResult
    where
        F: FnOnce(&mut S) -> ProbeResult + Send + 'static,
    {
        let started = SystemTime::now();
        let t0 = Instant::now();
        match self.inline(fast) {
            Some(result) => result.timed(started, t0.elapsed()),
            None => self.probe(timeout, body).await,
        }
    }
}

/// A door blocking test bodies wait behind until the test opens it.
#[cfg(test)]
#[derive(Debug, Default)]
pub(crate) struct Gate {
    open: std::sync::Mutex<bool>,
    opened: std::sync::Condvar,
}

#[cfg(test)]
impl Gate {
    /// Blocks until the gate is open, or 10 s at most: a failing test must not leave a thread the
    /// runtime waits for at shutdown.
    pub(crate) fn wait(&self) {
        let open = self.open.lock().unwrap_or_else(|e| e.into_inner());
        let _open = self
            .opened
            .wait_timeout_while(open, Duration::from_secs(10), |open| !*open)
            .unwrap_or_else(|e| e.into_inner());
    }

    pub(crate) fn open(&self) {
        *self.open.lock().unwrap_or_else(|e| e.into_inner()) = true;
        self.opened.notify_all();
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::result::Status;

    const TIMEOUT: Duration = Duration::from_millis(200);

    /// A body counting its calls and the state's, blocked behind `gate`.
    fn counting(
        gate: &Arc<Gate>,
        calls: &Arc<AtomicUsize>,
    ) -> impl FnOnce(&mut u32) -> u32 + Send + 'static {
        let (gate, calls) = (gate.clone(), calls.clone());
        move |n| {
            calls.fetch_add(1, Ordering::SeqCst);
            gate.wait();
            *n += 1;
            *n
        }
    }

    /// Calls again until the late call has returned and a new one answers (5 s at most).
    async fn answered(
        probe: &mut OffThread<u32, u32>,
        gate: &Arc<Gate>,
        calls: &Arc<AtomicUsize>,
    ) -> u32 {
        let deadline = Instant::now() + Duration::from_secs(5);
        loop {
            match probe.call(TIMEOUT, counting(gate, calls)).await {
                Ok(n) => return n,
                Err(r) => assert!(Instant::now() < deadline, "never returned: {}", r.message),
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
    }

    #[tokio::test]
    async fn an_answer_in_time_is_returned_and_the_state_kept() {
        let mut probe = OffThread::new(ProbeId::SystemDisk, 0u32);
        for expected in 1..=3 {
            let n = probe
                .call(TIMEOUT, |n| {
                    *n += 1;
                    *n
                })
                .await;
            assert_eq!(n.ok(), Some(expected));
        }
    }

    #[tokio::test]
    async fn a_blocked_call_is_critical_on_time_then_still_blocked_without_a_new_call_then_recovers()
     {
        let (gate, calls) = (Arc::new(Gate::default()), Arc::new(AtomicUsize::new(0)));
        let mut probe = OffThread::new(ProbeId::SystemDisk, 0u32);

        let t0 = Instant::now();
        let r = probe
            .call(TIMEOUT, counting(&gate, &calls))
            .await
            .expect_err("blocked");
        let took = t0.elapsed();
        assert!(
            took >= TIMEOUT && took < TIMEOUT + Duration::from_secs(1),
            "{took:?}"
        );
        assert_eq!(r.status, Status::Critical);
        assert!(r.unanswered);
        assert_eq!(r.message, "timed out after 200ms");

        let t0 = Instant::now();
        let r = probe
            .call(TIMEOUT, counting(&gate, &calls))
            .await
            .expect_err("still blocked");
        assert!(t0.elapsed() < TIMEOUT, "{:?}", t0.elapsed());
        assert_eq!(r.status, Status::Critical);
        assert!(r.unanswered);
        assert!(
            r.message.starts_with("still blocked for 0s"),
            "{}",
            r.message
        );
        assert_eq!(calls.load(Ordering::SeqCst), 1, "a second call was started");

        gate.open();
        // The late call counted 1 on the state it returned; the next call runs on it.
        let n = answered(&mut probe, &gate, &calls).await;
        assert_eq!(n, 2);
        assert_eq!(calls.load(Ordering::SeqCst), 2);
    }

    #[tokio::test]
    async fn a_wait_abandoned_midway_keeps_its_call() {
        let (gate, calls) = (Arc::new(Gate::default()), Arc::new(AtomicUsize::new(0)));
        let mut probe = OffThread::new(ProbeId::SystemCpu, 0u32);
        let abandoned = tokio::time::timeout(
            Duration::from_millis(50),
            probe.call(Duration::from_secs(5), counting(&gate, &calls)),
        )
        .await;
        assert!(abandoned.is_err());
        let r = probe
            .call(TIMEOUT, counting(&gate, &calls))
            .await
            .expect_err("still blocked");
        assert!(r.message.starts_with("still blocked"), "{}", r.message);
        assert_eq!(calls.load(Ordering::SeqCst), 1);
        gate.open();
    }

    #[tokio::test]
    async fn the_inline_path_answers_on_this_thread_but_never_while_a_call_has_the_state() {
        let (gate, calls) = (Arc::new(Gate::default()), Arc::new(AtomicUsize::new(0)));
        let mut probe = OffThread::new(ProbeId::SystemDisk, 0u32);
        let here = std::thread::current().id();
        let ran_on = probe.inline(|n| {
            *n += 10;
            Some(std::thread::current().id())
        });
        assert_eq!(ran_on, Some(here));
        assert_eq!(
            probe.inline(|_| None::<()>),
            None,
            "the fast path may decline"
        );
        // A call blocked: the state is away, the fast path declines without running.
        let blocked = probe.call(TIMEOUT, counting(&gate, &calls)).await;
        assert!(blocked.is_err());
        assert_eq!(probe.inline(|n| Some(*n)), None);
        gate.open();
        let n = answered(&mut probe, &gate, &calls).await;
        // 10 from the inline run, +1 by the late call, +1 by this one.
        assert_eq!(n, 12);
        assert_eq!(probe.inline(|n| Some(*n)), Some(12));
    }

    #[tokio::test]
    async fn a_probe_result_is_stamped() {
        let mut probe = OffThread::new(ProbeId::SystemMemory, ());
        let r = probe
            .probe(TIMEOUT, |_| ProbeId::SystemMemory.ok("fine"))
            .await;
        assert_eq!(r.status, Status::Ok);
        assert!(r.started_unix_ms > 0);
    }
}
