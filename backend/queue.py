"""Huey queues, one per device class: ``SqliteHuey`` in ``<data_dir>/queue.db`` embedded, ``RedisHuey`` when
``ANODE_QUEUE_URL`` is a Redis URL. The same task code runs on both; messages are JSON holding a run id only
(:class:`~backend.runs.tasks.RunMessages`), never pickles."""

from __future__ import annotations

from collections.abc import Callable

from huey import Huey, RedisHuey, SqliteHuey
from huey.api import TaskWrapper

from backend.runs.tasks import RunMessages, enqueue_only, register_execute
from backend.settings import DEVICE_CLASSES, DeviceClass, Settings

QUEUE_BUSY_TIMEOUT_S = 60


def queue_for_device(device: str) -> DeviceClass:
    """``cuda`` runs go to the gpu queue, everything else to the cpu queue."""
    return "gpu" if device == "cuda" else "cpu"


def make_huey(settings: Settings, device: DeviceClass) -> Huey:
    name = f"anode-{device}"
    url = settings.queue_url
    if url and not url.startswith("sqlite:///"):
        return RedisHuey(name, url=url, results=False, serializer=RunMessages())
    settings.queue_path.parent.mkdir(parents=True, exist_ok=True)
    return SqliteHuey(name, filename=str(settings.queue_path), results=False, timeout=QUEUE_BUSY_TIMEOUT_S,
                      serializer=RunMessages())


class RunQueues:
    """The queues of every device class, each with ``runs.execute`` registered with ``body``."""

    def __init__(self, settings: Settings, body: Callable[[int, int | None], None] = enqueue_only,
                 devices: tuple[DeviceClass, ...] = DEVICE_CLASSES) -> None:
        self.hueys: dict[DeviceClass, Huey] = {}
        self.tasks: dict[DeviceClass, TaskWrapper] = {}
        for device in devices:
            self.hueys[device] = make_huey(settings, device)
            self.tasks[device] = register_execute(self.hueys[device], body)

    def enqueue(self, run_id: int, device_class: DeviceClass, cell: int | None = None) -> None:
        """Queue run ``run_id``, or part ``cell`` of its fanned-out sweep."""
        if cell is None:
            self.tasks[device_class](run_id)
        else:
            self.tasks[device_class](run_id, cell)

    def sizes(self) -> dict[str, int]:
        return {device: huey.pending_count() for device, huey in self.hueys.items()}

    def close(self) -> None:
        for huey in self.hueys.values():
            huey.storage.close()
