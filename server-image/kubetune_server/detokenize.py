"""Incremental text output of one generated sequence: complete characters only, stop strings cut and held back."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class TextProgress:
    """What a row has produced as text and how much of it was already handed to the client."""

    stop: tuple[str, ...]
    emitted: int = 0
    stopped_by_string: bool = False

    def advance(self, text: str, final: bool) -> str:
        """The new text safe to send now, given the full decoded text so far.

        A trailing replacement character is an incomplete multi-byte character and waits for its next token;
        a tail that could be the start of a stop string waits until it is known not to be one.
        """
        stable = text if final else text.rstrip("\ufffd")
        cut = self._first_stop(stable)
        if cut is not None:
            self.stopped_by_string = True
            stable = stable[:cut]
            final = True
        end = len(stable) if final else len(stable) - self._held_tail(stable)
        end = max(end, self.emitted)
        delta = stable[self.emitted : end]
        self.emitted = end
        return delta

    def _first_stop(self, text: str) -> int | None:
        positions = [index for index in (text.find(stop, 0) for stop in self.stop if stop) if index >= 0]
        return min(positions) if positions else None

    def _held_tail(self, text: str) -> int:
        """Length of the longest suffix of `text` that is a proper prefix of some stop string."""
        longest = 0
        for stop in self.stop:
            for size in range(min(len(stop) - 1, len(text)), longest, -1):
                if text.endswith(stop[:size]):
                    longest = size
                    break
        return longest
