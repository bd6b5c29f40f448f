"""One ranking rule everywhere: a tie in validation accuracy (common: accuracies move in
steps of 1/400) goes to the lower validation loss in the report table, the HTML page,
the plots' "best" star, the SQL views and the final stage's choice of trial."""
from __future__ import annotations

import optuna
import pytest
import sqlalchemy
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState, create_trial

from study import html_report, plots, views
from study.results import ranked, top_table

DISTS = {"lr": FloatDistribution(1e-6, 1e-3, log=True), "reg": FloatDistribution(1e-5, 1e5, log=True)}


def _trial(value, val_loss, lr):
    attrs = {} if val_loss is None else {"val_loss": val_loss}
    return create_trial(state=TrialState.COMPLETE, value=value, params={"lr": lr, "reg": 1e-3},
                        distributions=DISTS, user_attrs=attrs)


@pytest.fixture
def tied(tmp_path):
    """A coarse-stage study in SQLite: trials 0 and 1 tie at 0.9; trial 1 has the lower loss."""
    url = f"sqlite:///{tmp_path / 'rank.db'}"
    study = optuna.create_study(study_name="tie-coarse", storage=url, direction="maximize")
    study.set_user_attr("stage", "coarse")
    for t in (_trial(0.9, 0.50, 1e-5), _trial(0.9, 0.30, 2e-5), _trial(0.8, 0.10, 3e-5),
              _trial(0.9, None, 4e-5)):
        study.add_trial(t)
    return url, study


def test_ties_go_to_the_lower_validation_loss_then_a_missing_loss_last(tied):
    _, study = tied
    assert [t.number for t in ranked(study.trials)] == [1, 0, 3, 2]
    assert [t.number for t in plots.completed(study.trials)] == [1, 0, 3, 2]


def test_report_table_page_star_and_sql_agree_on_the_best_trial(tied, tmp_path):
    url, study = tied
    table = top_table(study.trials).splitlines()
    assert table[1].split()[0] == "1" and table[1].split()[-1] == "1"  # rank 1 is trial 1
    fig = plots.search_figure(study.trials, "tie")
    stars = [c.get_label() for c in fig.axes[0].collections if str(c.get_label()).startswith("best")]
    assert stars == ["best #1: 0.900"]
    rows = html_report._top_table(study.trials).split("<tr>")[2:]  # after the header row
    assert [r.split("<td>")[-1].split("<")[0] for r in rows] == ["1", "0", "3", "2"]
    engine = sqlalchemy.create_engine(url)
    views.create_views(engine)
    with engine.connect() as conn:
        best = conn.execute(sqlalchemy.text("SELECT trial FROM facehpo_best")).scalar_one()
        order = conn.execute(sqlalchemy.text("SELECT trial FROM facehpo_top ORDER BY rank")).scalars().all()
    engine.dispose()
    assert best == 1 and order == [1, 0, 3, 2]
