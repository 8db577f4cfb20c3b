"""The third log's converter: titles read as people write them, genres as a category path,
ratings as likes or views; rows it cannot read are skipped and counted, never guessed."""

from __future__ import annotations

from pathlib import Path

from intentstream.perf.logs import load_events
from intentstream.perf.movielens import category_of, convert, main, readable


def test_titles_and_genres_are_read_as_people_write_them() -> None:
    assert readable("Matrix, The (1999)") == "The Matrix"
    assert readable("Toy Story (1995)") == "Toy Story"
    assert readable("City of Lost Children, The (Cité des enfants perdus, La) (1995)").startswith("City of")
    assert category_of("Adventure|Sci-Fi") == "movies.adventure.sci_fi"
    assert category_of("(no genres listed)") is None


def test_ratings_become_likes_or_views_in_time_order_and_bad_rows_are_counted(tmp_path: Path) -> None:
    movies = tmp_path / "movies.csv"
    movies.write_text(
        'movieId,title,genres \n1,"Matrix, The (1999)",Action|Sci-Fi\n'
        "2,Toy Story (1995),Animation\n3,,Drama\n"
    )
    ratings = tmp_path / "ratings.csv"
    rows = ["userId,movieId,rating,timestamp"]
    rows += [f"7,{1 + n % 2},{4.5 if n % 2 else 3},{1_000_000 + n}" for n in range(20)]
    rows += [
        "7,99,5,1000100",
        "7,1,five,1000200",
        "8,1,5,1000300",
    ]  # unknown film, bad rating, a rater too small
    ratings.write_text("\n".join(rows) + "\n")
    events, skipped = convert(ratings, movies, users=5)
    assert {e.user_id for e in events} == {"ml7"}
    assert len(events) == 20
    assert [e.ts for e in events] == sorted(e.ts for e in events)
    liked = [e for e in events if e.item_text == "Toy Story"]
    assert {e.action.value for e in liked} == {"favourite"}
    assert {e.category for e in events} == {"movies.action.sci_fi", "movies.animation"}
    assert skipped == {"unknown_movie": 1, "invalid_rating": 1, "movie_without_title": 1}
    out = tmp_path / "events.jsonl"
    assert main([str(ratings), str(movies), str(out), "--users", "5"]) == 0
    assert [e.event_id for e in load_events(out, "jsonl")] == [e.event_id for e in events]


def test_the_shipped_log_loads_whole() -> None:
    from intentstream.settings import Settings

    events = list(load_events(Settings().datasets_dir / "movielens" / "events.jsonl", "jsonl"))
    assert len(events) > 10_000
    assert all(e.item_text and e.user_id.startswith("ml") for e in events)
