"""The Emulator state object: config, request journal, pending scenarios, prompt cache."""

from __future__ import annotations

import threading
from collections.abc import Mapping
from typing import Any

from emulator.accounting import PrefixCache, RateWindow
from emulator.background import BackgroundRuns
from emulator.config import EmulatorConfig
from emulator.scenarios import Scenario, ScenarioQueue


class Emulator:
    def __init__(self, config: EmulatorConfig | None = None) -> None:
        self.config = config or EmulatorConfig()
        # Entries: {"method", "path", "query", "headers", "body", "status", "ts"}.
        self.journal: list[dict[str, Any]] = []
        self.scenarios = ScenarioQueue()
        self.prefix_cache = PrefixCache(self.config.cache_entries)
        self.rate_window = RateWindow()
        self.background = BackgroundRuns()
        self._journal_lock = threading.Lock()

    def push(self, scenario: Mapping[str, Any] | Scenario) -> Scenario:
        """Queue a scenario (see emulator.scenarios.Scenario for the fields)."""
        parsed = scenario if isinstance(scenario, Scenario) else Scenario.from_dict(scenario)
        self.scenarios.push(parsed)
        return parsed

    def reset(self) -> None:
        """Forget journal, pending scenarios and cached prompt prefixes (config is kept)."""
        with self._journal_lock:
            self.journal.clear()
        self.scenarios.clear()
        self.prefix_cache.clear()
        self.background.clear()

    def record(self, entry: dict[str, Any]) -> None:
        with self._journal_lock:
            self.journal.append(entry)
            excess = len(self.journal) - self.config.journal_limit
            if excess > 0:
                del self.journal[:excess]

    def journal_snapshot(self) -> list[dict[str, Any]]:
        with self._journal_lock:
            return [dict(entry) for entry in self.journal]

    def update_config(self, changes: Mapping[str, Any]) -> None:
        self.config.update(changes)
        self.prefix_cache.capacity = self.config.cache_entries

    def requests_to(self, path_suffix: str) -> list[dict[str, Any]]:
        """Journal entries whose path ends with ``path_suffix`` (e.g. "/chat/completions")."""
        return [entry for entry in self.journal_snapshot() if entry["path"].endswith(path_suffix)]
