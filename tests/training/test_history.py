import math

from pyro_contrast.training.history import History


def test_history_table_and_state_round_trip():
    history = History(2)
    for step in (1, 2, 3):
        history.step.append(step)
        history.train_loss.append(1.0 / step)
        history.lr.append(0.1)
        history.temperature[0].append(1.0)
        history.temperature[1].append(2.0)
    history.val_step.append(2)
    history.val_loss.append(0.7)
    frame = history.to_pandas()
    assert list(frame.index) == [1, 2, 3]
    assert frame.loc[2, "val_loss"] == 0.7 and math.isnan(frame.loc[1, "val_loss"])
    restored = History(2)
    restored.load_state_dict(history.state_dict())
    assert restored.to_pandas().equals(frame)
    assert "3 steps" in repr(history) and len(history) == 3
