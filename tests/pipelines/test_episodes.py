"""One alarm per problem: the episode planner night by night (pure), and the episodes store (real database)."""

from datetime import date, timedelta

import pytest

from pipelines.core.contracts import Decision, EpisodeState, Rule
from pipelines.steps import episodes as plans
from pipelines.steps.episodes import Readiness, plan
from pipelines.storage import episodes as store

START = date(2026, 10, 1)
DRIFT = "drift share above 0.25 for 3 nights in a row"
FLOOR = "realised roc_auc 0.600 is below the floor 0.65"


def _night(i: int) -> str:
    return (START + timedelta(days=i)).isoformat()


def _decision(i, *rules, version="1"):
    reasons = {Rule.DRIFT: DRIFT, Rule.PERFORMANCE: FLOOR, Rule.FORCE: "force", Rule.AGE: "old"}
    return Decision(
        retrain=bool(rules),
        reasons=[reasons[r] for r in rules],
        rules=list(rules),
        ds=_night(i),
        model_version=version,
    )


class Labels:
    """A fake readiness: the drift window can train from night `ready_on`; labels end `delay` nights back."""

    def __init__(self, ready_on=5, delay=3, sliding_from=0):
        self.ready_on, self.delay, self.sliding_from, self.tonight, self.asked = ready_on, delay, sliding_from, 0, []

    def __call__(self, rules):
        self.asked.append(rules)
        until = _night(self.tonight - self.delay)
        if self.tonight >= self.ready_on:
            return Readiness(True, labelled_until=until)
        if rules & plans.ACTS_AT_ONCE and self.tonight >= self.sliding_from:
            return Readiness(True, window="sliding", labelled_until=until)
        return Readiness(False, ready_after=_night(self.ready_on), why="too few since the onset", labelled_until=until)


def _run(config, nights, labels, episode=None, onset=None):
    """Plan each (night, rules) in order, storing the episode between nights as the flow does; return the decisions."""
    out = []
    for i, rules in nights:
        labels.tonight = i
        episode, decision = plan(config, episode, _decision(i, *rules), labels, onset)
        if episode is not None and episode.id is None:
            episode = episode.model_copy(update={"id": 1})
        out.append(decision)
    return out, episode


def test_a_drift_episode_requests_once_when_labels_allow_and_alerts_once(config):
    labels = Labels(ready_on=5)
    decisions, episode = _run(config, [(i, [Rule.DRIFT]) for i in range(0, 12)], labels, onset=_night(-2))
    requests = [d.ds for d in decisions if d.request]
    assert requests == [_night(5)]  # not on the 5 nights before the data since the onset can exist
    assert [d.alert for d in decisions][:2] == ["opened", None]
    assert decisions[0].outcome.startswith("episode (new): waiting for labelled data")
    assert _night(5) in decisions[0].outcome  # the opening alert says when retraining runs
    assert "waiting for its outcome" in decisions[6].outcome
    assert episode.state == EpisodeState.REQUESTED and episode.requests == 1 and episode.onset == _night(-2)
    assert all(d.episode is not None and d.retrain for d in decisions)
    assert decisions[4].episode.ready_after == _night(5) and episode.ready_after is None
    assert decisions[5].request_window is None  # the configured window
    assert episode.last_fired_ds == _night(11) and episode.opened_ds == _night(0)


def test_a_rerun_of_the_night_that_requested_does_not_request_again(config):
    labels = Labels(ready_on=0)
    (first,), episode = _run(config, [(3, [Rule.DRIFT])], labels)
    assert first.request and first.alert == "opened"
    labels.tonight = 3
    episode, rerun = plan(config, episode, _decision(3, Rule.DRIFT), labels)
    assert not rerun.request and rerun.alert is None and "already requested" in rerun.outcome
    assert episode.requests == 1


def test_reminders_follow_every_n_partitions_without_progress(config):
    every = config.retraining.reminder_partitions
    labels = Labels(ready_on=100)  # never ready: no progress
    decisions, episode = _run(config, [(i, [Rule.DRIFT]) for i in range(0, 3 * every + 1)], labels)
    reminders = [d.ds for d in decisions if d.alert == "reminder"]
    assert reminders == [_night(every), _night(2 * every), _night(3 * every)]
    assert episode.reminders == 3 and not any(d.request for d in decisions)


def test_a_request_restarts_the_reminder_clock(config):
    every = config.retraining.reminder_partitions
    labels = Labels(ready_on=every - 1)
    decisions, _ = _run(config, [(i, [Rule.DRIFT]) for i in range(0, 2 * every)], labels)
    assert [d.ds for d in decisions if d.request] == [_night(every - 1)]
    assert [d.ds for d in decisions if d.alert == "reminder"] == [_night(2 * every - 1)]


def test_performance_rules_act_at_once_on_the_sliding_window(config):
    labels = Labels(ready_on=10, sliding_from=0)
    decisions, episode = _run(config, [(0, [Rule.DRIFT]), (1, [Rule.DRIFT, Rule.PERFORMANCE])], labels)
    assert not decisions[0].request  # drift alone waits for the data since the onset
    assert decisions[1].request and decisions[1].request_window == "sliding"
    assert decisions[1].alert is None  # the episode alerted when it opened
    assert episode.rules == [Rule.DRIFT, Rule.PERFORMANCE]


def test_an_open_performance_episode_requests_once_the_data_allows_even_on_a_quiet_night(config):
    labels = Labels(ready_on=10, sliding_from=2)
    decisions, episode = _run(config, [(0, [Rule.PERFORMANCE]), (1, []), (2, [])], labels, onset=_night(-5))
    assert [d.request for d in decisions] == [False, False, True] and decisions[2].request_window == "sliding"
    assert episode.onset is None  # only drift has an onset


def test_a_backed_off_episode_requests_again_only_once_the_window_moved(config):
    labels = Labels(ready_on=0, delay=2)
    (first,), episode = _run(config, [(0, [Rule.PERFORMANCE])], labels)
    assert first.request
    episode, alert = plans.backoff(config, episode, "5", _night(-2))
    assert alert and episode.state == EpisodeState.BACKOFF and episode.candidates == ["5"]
    assert "v5" in episode.outcome and "retraining is not helping" in episode.outcome
    retry = date.fromisoformat(episode.retry_after)
    assert retry == date.fromisoformat(_night(-2)) + timedelta(days=config.retry_after_partitions)
    nights = [(i, [Rule.PERFORMANCE]) for i in range(1, 20)]
    decisions, episode = _run(config, nights, labels, episode)
    asked = [d.ds for d in decisions if d.request]
    # labels end 2 nights back: the window reaches retry_after on night retry + 2
    assert asked == [(retry + timedelta(days=2)).isoformat()]
    assert "retraining did not help" in decisions[0].outcome
    _, again = plans.backoff(config, episode, "6", asked[0])
    assert not again  # "retraining is not helping" is said once per episode


def test_no_not_helping_alert_for_an_old_champion_that_a_newer_model_does_not_beat(config):
    labels = Labels(ready_on=0)
    (_,), episode = _run(config, [(0, [Rule.AGE])], labels)
    _, alert = plans.backoff(config, episode, "5", _night(0))
    assert not alert


def test_quiet_partitions_count_from_the_last_night_a_rule_fired(config):
    k = config.retraining.drift_consecutive_nights
    labels = Labels(ready_on=100)
    nights = [(i, [Rule.DRIFT]) for i in range(4)] + [(i, []) for i in range(4, 4 + k)]
    decisions, _ = _run(config, nights, labels)
    closed = [d.ds for d in decisions if d.episode is not None and not d.episode.open]
    assert closed == [_night(3 + k)]


def test_an_episode_whose_rules_stop_firing_closes_after_k_quiet_partitions(config):
    k = config.retraining.drift_consecutive_nights
    labels = Labels(ready_on=100)
    nights = [(0, [Rule.DRIFT])] + [(i, []) for i in range(1, k + 1)] + [(k + 1, [Rule.DRIFT])]
    decisions, episode = _run(config, nights, labels)
    assert decisions[k - 1].episode.open and not decisions[k].episode.open
    assert "no retraining rule fired" in decisions[k].outcome
    assert decisions[k + 1].alert == "opened"  # a new problem is a new episode


def test_a_requested_episode_stays_open_until_its_outcome(config):
    labels = Labels(ready_on=0)
    k = config.retraining.drift_consecutive_nights
    decisions, episode = _run(config, [(0, [Rule.DRIFT])] + [(i, []) for i in range(1, 2 * k)], labels)
    assert decisions[0].request and episode.state == EpisodeState.REQUESTED


def test_a_run_that_could_not_train_puts_the_episode_back_to_waiting(config):
    labels = Labels(ready_on=0)
    (_,), episode = _run(config, [(0, [Rule.DRIFT])], labels)
    episode = plans.back_to_waiting(episode, "only 2 partitions since the onset", _night(4))
    assert episode.state == EpisodeState.WAITING and episode.ready_after == _night(4)
    decisions, episode = _run(config, [(i, [Rule.DRIFT]) for i in range(1, 6)], labels, episode)
    assert _night(4) in decisions[0].outcome and "too few usable labels" in decisions[0].outcome
    # not every night meanwhile (the files looked enough before): once a labelled partition more can exist
    assert [d.ds for d in decisions if d.request] == [_night(4)] and episode.requests == 2
    assert plans.back_to_waiting(episode.model_copy(update={"state": EpisodeState.BACKOFF}), "x", None) is None


def test_force_requests_even_while_a_request_is_out(config):
    labels = Labels(ready_on=0)
    decisions, episode = _run(config, [(0, [Rule.DRIFT]), (1, [Rule.DRIFT, Rule.FORCE])], labels)
    assert [d.request for d in decisions] == [True, True] and episode.requests == 2


def test_a_quiet_night_without_an_episode_keeps_and_stores_nothing(config):
    episode, decision = plan(config, None, _decision(0), Labels())
    assert episode is None and not decision.request and decision.alert is None


def test_the_store_keeps_one_open_episode_per_model_and_reads_it_back(config, tmp_path):

    assert store.open_episode(config) is None
    opened = store.change_open(config, lambda ep: plan(config, ep, _decision(0, Rule.DRIFT), Labels())[0])
    assert opened.id is not None and store.open_episode(config) == opened
    other = config.model_copy(update={"model": config.model.model_copy(update={"registered_name": "other"})})
    assert store.open_episode(other) is None  # one database holds many models
    closed = store.change_open(config, lambda ep: plans.after_promotion(ep, "7", _night(9)))
    assert closed.id == opened.id and not closed.open and closed.candidates == ["7"] and closed.closed_ds == _night(9)
    assert "v7 promoted" in closed.outcome
    assert store.open_episode(config) is None
    assert [e.id for e in store.episodes(config)] == [opened.id]
    assert store.change_open(config, lambda ep: None) is None


@pytest.mark.parametrize("state", [EpisodeState.WAITING, EpisodeState.BACKOFF])
def test_backing_off_or_waiting_episodes_do_not_request_before_ready(config, state):
    labels = Labels(ready_on=100, sliding_from=100)
    (_,), episode = _run(config, [(0, [Rule.DRIFT])], labels)
    episode = episode.model_copy(update={"state": state, "retry_after": _night(50)})
    decisions, _ = _run(config, [(i, [Rule.DRIFT]) for i in range(1, 6)], labels, episode)
    assert not any(d.request for d in decisions)


def test_force_requests_even_before_the_data_allows(config):
    labels = Labels(ready_on=100, sliding_from=100)
    (forced,), episode = _run(config, [(0, [Rule.FORCE])], labels)
    assert forced.request and forced.alert == "opened" and episode.state == EpisodeState.REQUESTED


def test_after_an_operator_s_rollback_an_episode_alerts_but_requests_only_on_force(config):
    labels = Labels(ready_on=0)
    hold = "the champion v1 was set by a rollback (alice, 2026-10-01): retraining is not requested automatically"
    episode, opened = plan(config, None, _decision(0, Rule.DRIFT), labels, hold=hold)
    assert opened.alert == "opened" and not opened.request and hold in opened.outcome
    episode = episode.model_copy(update={"id": 1})
    _, forced = plan(config, episode, _decision(1, Rule.DRIFT, Rule.FORCE), labels, hold=hold)
    assert forced.request


def test_a_drift_onset_after_a_rejected_sliding_candidate_gets_its_own_window_at_once(config):
    labels = Labels(ready_on=0)
    (first,), episode = _run(config, [(0, [Rule.PERFORMANCE])], labels)
    episode, _ = plans.backoff(config, episode, "5", _night(-3), window_start=_night(-30))
    (held,), episode = _run(config, [(1, [Rule.PERFORMANCE])], labels, episode)
    assert not held.request  # the same kind of window again: wait for it to move
    (drift,), episode = _run(config, [(2, [Rule.PERFORMANCE, Rule.DRIFT])], labels, episode, onset=_night(-1))
    assert drift.request and episode.onset == _night(-1)  # the days since the onset were never tried
