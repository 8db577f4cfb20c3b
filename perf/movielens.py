"""The third evaluation log, of another domain: MovieLens ``ml-latest-small`` (GroupLens)
converted to the project's JSONL of behaviour events.

Items there are titled works ("Toy Story (1995)") with genres, not typed products: the log
that shows whether the agents name interests ("animated adventure") or echo titles. Each
rating becomes one event of the rater: ``favourite`` for 4 stars or more (a liked film),
``view`` below; the title (year dropped, "Matrix, The" read "The Matrix") is the item's
text and ``movies.<genres>`` its category path. A seeded sample of raters keeps the file
small.

    python -m intentstream.perf.movielens ratings.csv movies.csv events.jsonl
"""

from __future__ import annotations

import argparse
import csv
import random
import re
import sys
from collections import Counter, defaultdict
from datetime import UTC, datetime
from pathlib import Path

import orjson
from pydantic import ValidationError

from intentstream.schemas.events import Action, BehaviorEvent

SEED = 20_261_201
USERS = 200
MIN_RATINGS, MAX_RATINGS = 20, 250
LIKED = 4.0
_YEAR = re.compile(r"\s*\(\d{4}\)\s*$")
_ARTICLE = re.compile(r"^(?P<title>.+), (?P<article>The|A|An|Les|La|Le|Il|Das|Der|Die|El)$")


def readable(title: str) -> str:
    """A MovieLens title as people write it: "Matrix, The (1999)" is "The Matrix"."""
    title = _YEAR.sub("", title.strip())
    match = _ARTICLE.match(title)
    return f"{match['article']} {match['title']}" if match else title


def category_of(genres: str) -> str | None:
    """``movies.<genre>.<genre>``, or None for "(no genres listed)"."""
    kinds = [g.strip().casefold().replace(" ", "_").replace("-", "_") for g in genres.split("|")]
    kinds = [k for k in kinds if k and not k.startswith("(")]
    return "movies." + ".".join(kinds) if kinds else None


def convert(
    ratings: Path, movies: Path, *, users: int = USERS, seed: int = SEED
) -> tuple[list[BehaviorEvent], Counter[str]]:
    """The sampled raters' events in time order, and the rows skipped (by reason)."""
    skipped: Counter[str] = Counter()
    films: dict[str, tuple[str, str | None]] = {}
    with movies.open(newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row = {(k or "").strip(): v for k, v in raw.items()}  # one published header ends "genres "
            title = readable(row.get("title") or "")
            if not title or not row.get("movieId"):
                skipped["movie_without_title"] += 1
                continue
            films[row["movieId"]] = (title, category_of(row.get("genres") or ""))
    by_user: dict[str, list[dict[str, str]]] = defaultdict(list)
    with ratings.open(newline="", encoding="utf-8") as f:
        for raw in csv.DictReader(f):
            row = {(k or "").strip(): v for k, v in raw.items()}
            by_user[row.get("userId") or ""].append(row)
    eligible = sorted(u for u, rows in by_user.items() if u and MIN_RATINGS <= len(rows) <= MAX_RATINGS)
    chosen = random.Random(seed).sample(eligible, min(users, len(eligible)))
    events: list[BehaviorEvent] = []
    for user in chosen:
        for row in by_user[user]:
            film = films.get(row.get("movieId") or "")
            if film is None:
                skipped["unknown_movie"] += 1
                continue
            try:
                stars = float(row["rating"])
                events.append(
                    BehaviorEvent(
                        event_id=f"ml-{user}-{row['movieId']}",
                        user_id=f"ml{user}",
                        action=Action.FAVOURITE if stars >= LIKED else Action.VIEW,
                        ts=datetime.fromtimestamp(int(row["timestamp"]), UTC),
                        item_id=f"movie-{row['movieId']}",
                        item_text=film[0],
                        category=film[1],
                    )
                )
            except (KeyError, TypeError, ValueError, ValidationError):
                skipped["invalid_rating"] += 1
    events.sort(key=lambda e: (e.ts, e.event_id))
    return events, skipped


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("ratings", type=Path)
    parser.add_argument("movies", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--users", type=int, default=USERS)
    parser.add_argument("--seed", type=int, default=SEED)
    args = parser.parse_args(argv)
    events, skipped = convert(args.ratings, args.movies, users=args.users, seed=args.seed)
    with args.out.open("wb") as f:
        for e in events:
            f.write(orjson.dumps(e.model_dump(mode="json", exclude_none=True)) + b"\n")
    users = len({e.user_id for e in events})
    print(f"{len(events)} events of {users} users written to {args.out}", file=sys.stderr)
    if skipped:
        print(f"skipped: {dict(skipped)}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
