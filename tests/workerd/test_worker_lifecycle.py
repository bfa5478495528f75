"""The worker's lifecycle: the transition table itself (plain values), and real workers
going through it (real SQLite store and queue, the scripted nommer)."""

from twisted.internet import reactor
from twisted.trial.unittest import SynchronousTestCase, TestCase

from nommer.core.worker_registry import base as registry
from nommer.core.states import JobState
from nommer.workerd.lifecycle import (
    REGISTRY_STATE, TRANSITIONS, IllegalWorkerTransition, Lifecycle, check_transition, reports)
from nommer.workerd.worker import Worker
from tests.helpers import ensure, eventually
from tests.workerd import scripted_nommer
from tests.workerd.worker_harness import WorkerHarness

L = Lifecycle

#: (old, new): a transition the worker makes, and what makes it.
LEGAL = [
    (L.CREATED, L.STARTING),       # startService
    (L.STARTING, L.RUNNING),       # sandbox check passed, slot loops started
    (L.STARTING, L.REFUSED),       # sandbox check failed
    (L.STARTING, L.STOPPING),      # stopService during the check
    (L.RUNNING, L.STOPPING),       # idle exit begun, or stopService
    (L.RUNNING, L.DRAINING),       # first SIGTERM, rebalance recommendation
    (L.RUNNING, L.INTERRUPTED),    # spot interruption notice
    (L.STOPPING, L.DRAINING),      # SIGTERM while the idle exit waits for the loops
    (L.STOPPING, L.EXITED),        # idle exit done
    (L.DRAINING, L.RELEASING),     # second SIGTERM
    (L.DRAINING, L.INTERRUPTED),   # the notice after a rebalance recommendation
    (L.DRAINING, L.EXITED),        # running jobs finished
    (L.RELEASING, L.INTERRUPTED),  # the notice during a cold shutdown
    (L.RELEASING, L.EXITED),       # running jobs released
    (L.INTERRUPTED, L.EXITED),     # jobs released, or SPOT_EXIT_DEADLINE_S
    (L.REFUSED, L.EXITED),         # refused without on_fatal
    (L.EXITED, L.TERMINATING),     # exit_on_ec2
]

#: (old, new): transitions that would be bugs.
ILLEGAL = [
    (L.CREATED, L.RUNNING),         # never without the sandbox check
    (L.RUNNING, L.EXITED),          # an exit always stops taking jobs first
    (L.RUNNING, L.RELEASING),       # cold only after warm
    (L.INTERRUPTED, L.DRAINING),    # a drain cannot undo releasing the jobs
    (L.RELEASING, L.DRAINING),
    (L.EXITED, L.RUNNING),          # no coming back
    (L.EXITED, L.STARTING),
    (L.TERMINATING, L.EXITED),
    (L.DRAINING, L.DRAINING),       # a state to itself is no transition
    (L.RUNNING, L.TERMINATING),     # terminating only after on_exit
]


class TableTests(SynchronousTestCase):

    def test_every_state_has_a_row(self):
        """Each state has its transitions and its registry value; targets are states."""
        self.assertEqual(set(TRANSITIONS), set(Lifecycle))
        self.assertEqual(set(REGISTRY_STATE), set(Lifecycle))
        for targets in TRANSITIONS.values():
            self.assertLessEqual(targets, set(Lifecycle))

    def test_registry_states_map_cleanly(self):
        """The registry's stored values are exactly the registry states shown, and each is
        the value of the state of the same name."""
        self.assertEqual(set(REGISTRY_STATE.values()), set(registry.WORKER_STATES))
        for value in registry.WORKER_STATES:
            self.assertEqual(REGISTRY_STATE[Lifecycle(value)], value)

    def test_legal_transitions(self):
        """Every transition the worker makes is in the table; the table holds no other."""
        for old, new in LEGAL:
            self.assertIs(check_transition(old, new), new, f"{old} -> {new}")
        self.assertEqual({(old, new) for old, targets in TRANSITIONS.items() for new in targets},
                         set(LEGAL) | {(L.CREATED, L.DRAINING), (L.CREATED, L.INTERRUPTED),
                                       (L.STARTING, L.DRAINING), (L.STARTING, L.INTERRUPTED),
                                       (L.REFUSED, L.DRAINING), (L.REFUSED, L.INTERRUPTED),
                                       (L.STOPPING, L.INTERRUPTED)})

    def test_illegal_transitions_raise(self):
        """A transition not in the table raises, naming both states."""
        for old, new in ILLEGAL:
            with self.assertRaises(IllegalWorkerTransition, msg=f"{old} -> {new}") as caught:
                check_transition(old, new)
            self.assertIn(f"{old.name} -> {new.name}", str(caught.exception))

    def test_every_state_leads_to_exited(self):
        """From every state but TERMINATING the worker can still exit; TERMINATING is the end."""
        def reachable(state):
            seen, todo = set(), [state]
            while todo:
                for nxt in TRANSITIONS[todo.pop()] - seen:
                    seen.add(nxt)
                    todo.append(nxt)
            return seen
        for state in set(Lifecycle) - {L.EXITED, L.TERMINATING}:
            self.assertIn(L.EXITED, reachable(state), state)
        self.assertEqual(TRANSITIONS[L.TERMINATING], set())

    def test_reported_changes(self):
        """A change the registry shows is reported, except TERMINATING (exit_on_ec2 reports it)."""
        rows = [((L.RUNNING, L.DRAINING), True), ((L.DRAINING, L.RELEASING), False),
                ((L.RELEASING, L.INTERRUPTED), True), ((L.DRAINING, L.INTERRUPTED), True),
                ((L.STARTING, L.RUNNING), False), ((L.RUNNING, L.STOPPING), False),
                ((L.STOPPING, L.EXITED), True), ((L.INTERRUPTED, L.EXITED), True),
                ((L.EXITED, L.TERMINATING), False)]
        for (old, new), expected in rows:
            self.assertEqual(reports(old, new), expected, f"{old} -> {new}")


class WorkerLifecycleTests(WorkerHarness, TestCase):

    def worker(self, **kwargs):
        """A Worker not started yet, its transitions recorded in ``self.seen``."""
        worker = Worker(self.ledger, self.settings_with(**kwargs.pop("settings", {})), reactor,
                        worker_id="test-worker", on_exit=self.exits.append, install_signals=False, **kwargs)
        worker.on_state_change = lambda: self.states.append((worker.worker_id, worker.state))
        self.seen = []
        real = worker._transition

        def recording(new, report=True):
            real(new, report)
            self.seen.append(new)
        worker._transition = recording
        self.addCleanup(lambda: worker.running and worker.stopService())
        return worker

    def test_a_new_worker_is_created_and_shows_running(self):
        """Before start: CREATED, which the registry shows as running."""
        worker = self.worker()
        self.assertEqual((worker.lifecycle, worker.state, worker.status()["state"]),
                         (L.CREATED, registry.RUNNING, registry.RUNNING))

    def test_illegal_transition_raises_and_changes_nothing(self):
        """TERMINATING before the worker exited is refused; the state stays."""
        worker = self.worker()
        with self.assertRaises(IllegalWorkerTransition):
            worker.terminating()
        self.assertIs(worker.lifecycle, L.CREATED)
        self.assertEqual(self.states, [])

    @ensure
    async def test_warm_then_cold_shutdown(self):
        """Start, run, SIGTERM (warm), SIGTERM (cold: the job released), exit."""
        worker = self.worker()
        worker.startService()
        self.assertIs(worker.lifecycle, L.STARTING)
        self.assertTrue(await worker.ready)
        self.assertIs(worker.lifecycle, L.RUNNING)
        job = await self.submit("block")
        await eventually(lambda: self.in_state(job.job_id, JobState.ENCODING), what="encoding")
        worker.request_shutdown()
        self.assertIs(worker.lifecycle, L.DRAINING)
        worker.request_shutdown()
        self.assertIs(worker.lifecycle, L.RELEASING)
        await eventually(lambda: self.exits == ["shutdown"], what="exit")
        worker.request_shutdown()   # gone: changes nothing
        self.assertEqual(self.seen, [L.STARTING, L.RUNNING, L.DRAINING, L.RELEASING, L.EXITED])
        self.assertEqual([s for _, s in self.states], [registry.DRAINING, registry.EXITED])
        self.assertIn(job.job_id, scripted_nommer.CANCELED)

    @ensure
    async def test_idle_exit_stops_then_exits(self):
        """An idle worker stops taking jobs, then exits; the registry sees running, then exited."""
        worker = self.worker(settings={"WORKER_MAX_IDLE_S": 0.3})
        worker.startService()
        await eventually(lambda: self.exits, what="idle exit")
        self.assertEqual(self.seen, [L.STARTING, L.RUNNING, L.STOPPING, L.EXITED])
        self.assertEqual([s for _, s in self.states], [registry.EXITED])

    @ensure
    async def test_service_stop_takes_no_job_and_does_not_exit(self):
        """stopService: STOPPING, the loops end, on_exit is not called (twistd is stopping)."""
        worker = self.worker()
        worker.startService()
        await worker.ready
        await worker.stopService()
        self.assertEqual(self.seen, [L.STARTING, L.RUNNING, L.STOPPING])
        self.assertEqual((self.exits, self.states), ([], []))

    @ensure
    async def test_refused_with_on_fatal(self):
        """The sandbox does not start and on_fatal is given: REFUSED, no exit of its own."""
        fatal = []
        worker = self.worker(settings={"BWRAP_BIN": "/nonexistent/bwrap"}, on_fatal=fatal.append)
        worker.startService()
        self.assertFalse(await worker.ready)
        self.assertEqual(self.seen, [L.STARTING, L.REFUSED])
        self.assertEqual((len(fatal), self.exits, worker.state), (1, [], registry.RUNNING))
