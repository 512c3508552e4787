"""WALL-E with a learned transition model: learning, lookahead, exploration, goals as data."""

import pytest

from agents.walle.goals import parse_goal
from agents.walle.lookahead import run_episode, search, search_novel
from agents.walle.transition_model import TransitionModel
from agents.walle.train import WalleConfig, run_walle
from embodied.cli import main as cli_main
from envs.drawer_block import DrawerBlockEnv
from envs.symbolic import SCRIPTED_PLANS, SKILLS, SkillExecutor, predicates


class Flat:
    """A proposer with no preference at all (the search, not the LLM, does the planning)."""

    def score(self, messages, candidates):
        return [0.0] * len(candidates)


class Looping:
    """A one-step proposer that always likes the move that changes nothing useful."""

    def score(self, messages, candidates):
        return [0.0 if c == "move_to(handle)" else -5.0 for c in candidates]


def scripted_triples(task: str, seeds) -> list:
    out = []
    for seed in seeds:
        env = DrawerBlockEnv(task)
        env.reset(seed=seed)
        executor = SkillExecutor(env)
        for skill in SCRIPTED_PLANS[task]:
            before = predicates(env)
            executor.execute(skill)
            out.append((before, skill, predicates(env)))
    return out


def test_effect_rules_predict_held_out_transitions():
    train = scripted_triples("retrieve", [0, 1]) + scripted_triples("tidy", [0])
    held_out = scripted_triples("retrieve", [7]) + scripted_triples("tidy", [8])
    model = TransitionModel.learn(train)
    assert model.accuracy(held_out, rules_only=True) >= 0.9  # the rules generalise; no memorised outcome used
    assert TransitionModel().accuracy(held_out) == 0.0  # an empty model predicts nothing
    source = model.rules["pull(handle)"].source
    assert "def effects_pull_handle(state, action, graphs):" in source and "drawer_open" in source


def test_learned_model_saves_as_readable_files_and_loads_back(tmp_path):
    model = TransitionModel.learn(scripted_triples("tidy", [0]))
    model.save(tmp_path)
    assert (tmp_path / "effects_release.py").read_text().startswith("# what release() does")
    loaded = TransitionModel.load(tmp_path)
    triples = scripted_triples("tidy", [3])
    assert loaded.accuracy(triples) == model.accuracy(triples)


def test_lookahead_plans_where_the_one_step_proposer_loops():
    model = TransitionModel.learn(scripted_triples("retrieve", [0, 1]))
    env = DrawerBlockEnv("retrieve")
    env.reset(seed=5)
    goal = parse_goal("retrieve")
    plan = search(model, predicates(env), goal, list(SKILLS))
    assert plan and plan[-1] == "release()"
    one_step = [0.0 if c == "move_to(handle)" else -5.0 for c in SKILLS]
    assert max(range(len(SKILLS)), key=one_step.__getitem__) == SKILLS.index("move_to(handle)")  # what it would loop on
    log = run_episode(DrawerBlockEnv("retrieve"), Looping(), goal, model, seed=5, max_decisions=20)
    # receding horizon: a mispredicted step is observed and the search routes around it
    assert log.success and log.planned >= log.decisions - 2
    assert [s for _, s, _ in log.triples].count("move_to(handle)") <= 1


def test_exploration_goes_to_an_untried_skill():
    triples = scripted_triples("tidy", [0])
    model = TransitionModel.learn(triples)
    start = triples[0][0]
    path = search_novel(model, start, list(SKILLS))
    assert path is not None
    # replay the path in the model: its last skill was never tried in the state it is taken in
    state = start
    for skill in path[:-1]:
        state = model.predict_many([(state, skill)])[0]
    assert model.tried(state, path[-1]) == 0


@pytest.mark.parametrize(
    "spec, ok",
    [
        ("stow", True),
        ("block-on-table-drawer-closed:block_in_drawer+drawer_closed", True),
        ("block-in-drawer-drawer-open:!block_in_drawer+!drawer_open", True),
        ("block-under-table:block_on_goal", False),
        ("block-on-table-drawer-open:flying", False),
        ("sweep", False),
        ("block-on-table-drawer-open:", False),
        ("block-on-table-drawer-open:drawer_open+drawer_open", False),
        ("block-on-table-drawer-closed:!drawer_open+!drawer_closed", True),  # half open: a state that exists
        ("block-on-table-drawer-closed:drawer_open+drawer_closed", False),  # no state is both
        ("block-on-table-drawer-open:holding_block+holding_handle", False),
        ("block-on-table-drawer-open:!gripper_empty+!holding_block+!holding_handle", False),
    ],
)
def test_goal_specs_parse_and_bad_ones_give_one_line(spec, ok, capsys, tmp_path):
    if ok:
        goal = parse_goal(spec)
        assert goal.conditions and goal.layout
    else:
        with pytest.raises(ValueError):
            parse_goal(spec)
        assert cli_main(["train", "walle", "--tasks", spec, "--run-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err.strip().splitlines()
        assert len(err) == 1 and err[0].startswith("error:"), err
        assert not any(tmp_path.iterdir())


def test_a_task_named_twice_is_refused(capsys, tmp_path):
    """Results, videos and environments are kept per task name: ``stow,stow`` ran 2 episodes and reported one."""
    assert cli_main(["train", "walle", "--tasks", "stow, stow", "--run-dir", str(tmp_path), "--iterations", "0"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "names a task twice" in err[0], err
    assert not any(tmp_path.iterdir())


def test_every_state_the_environment_reaches_is_one_the_goal_check_allows():
    """A goal no state satisfies is refused when parsed; the exclusions it uses must hold in the environment, or a
    reachable goal would be refused: every state along each task's scripted plan and random skills is allowed."""
    import random

    from agents.walle.goals import definitionally_possible

    rng, seen = random.Random(0), []
    for task in SCRIPTED_PLANS:
        for seed, skills in ((0, SCRIPTED_PLANS[task]), (1, [rng.choice(SKILLS) for _ in range(25)])):
            env = DrawerBlockEnv(task)
            env.reset(seed=seed)
            executor = SkillExecutor(env)
            for skill in skills:
                executor.execute(skill)
                seen.append(predicates(env))
    assert all(definitionally_possible(state) for state in seen)
    assert any(s["holding_block"] for s in seen) and any(s["holding_handle"] for s in seen)
    with pytest.raises(ValueError, match="no state"):
        parse_goal("block-on-table-drawer-closed:drawer_open+drawer_closed")


def test_lookahead_learns_to_solve_tasks_and_new_goals_need_no_learning(tmp_path):
    cfg = WalleConfig(
        tasks=("retrieve", "tidy"),
        iterations=3,
        episodes_per_task=2,
        max_decisions=40,
        video=False,
        run_dir=tmp_path,
        run_name="learn",
    )
    results = run_walle(cfg, llm=Flat())["results"]
    assert results[0]["effect_rules"] == 0 and results[-1]["effect_rules"] > 0
    assert all(v == 1.0 for v in results[-1]["success"].values()), results[-1]
    assert list((tmp_path / "learn" / "model" / "iter_3").glob("effects_*.py"))
    # a goal never used in learning, solved from the saved model without learning
    new = WalleConfig(
        tasks=("block-on-table-drawer-open:block_on_goal",),
        iterations=0,
        episodes_per_task=1,
        max_decisions=20,
        video=False,
        run_dir=tmp_path,
        run_name="new",
        world_model=tmp_path / "learn",
    )
    assert run_walle(new, llm=Flat())["results"][0]["success"] == {"block-on-table-drawer-open:block_on_goal": 1.0}


class RuleWriter:
    """A stand-in for a capable served model: returns the code it was given."""

    def __init__(self, reply):
        self.reply = reply

    def generate(self, messages, max_tokens=64):
        return self.reply


GOOD_RELEASE = """```python
def effects(state, action, graphs):
    new = dict(state)
    if state.get("holding_block") and state.get("over_goal"):
        new["block_on_goal"] = True
    new["holding_block"] = False
    new["holding_handle"] = False
    new["gripper_empty"] = True
    new["near_block"] = False
    new["near_handle"] = False
    return new
```"""


def test_llm_written_rules_go_through_the_same_checks(tmp_path):
    from agents.walle.transition_model import rule_from_llm

    triples = [t for t in scripted_triples("retrieve", [0, 1]) + scripted_triples("tidy", [0])]
    rule = rule_from_llm(RuleWriter(GOOD_RELEASE), "release()", triples)
    assert rule is not None and rule.name == "effects_release"
    marker = tmp_path / "ran"
    hostile = f"```python\ndef effects(state, action, graphs=open({str(marker)!r}, 'w')):\n    return state\n```"
    assert rule_from_llm(RuleWriter(hostile), "release()", triples) is None and not marker.exists()
    wrong = (
        "def effects(state, action, graphs):\n    return dict(state)\n"  # predicts nothing changes: worse than fitted
    )
    assert rule_from_llm(RuleWriter(wrong), "release()", triples) is None
    assert rule_from_llm(RuleWriter("I cannot write code."), "release()", triples) is None


def test_llm_written_rules_through_the_http_backend(loopback):
    import json

    from agents.walle.transition_model import rule_from_llm
    from embodied.llm.http import OpenAICompatibleLLM
    from loopback import QuietHandler

    class Server(QuietHandler):
        def do_POST(self):  # noqa: N802
            self.rfile.read(int(self.headers["Content-Length"]))
            self.send_body(json.dumps({"choices": [{"message": {"content": GOOD_RELEASE}}]}).encode())

    llm = OpenAICompatibleLLM(loopback.start(Server), retries=0, timeout=5)
    triples = scripted_triples("retrieve", [0, 1])
    assert rule_from_llm(llm, "release()", triples) is not None
