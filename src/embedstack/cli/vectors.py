"""``embedstack vectors neighbors|analogy PATH ...``: query word vectors from the command line.

PATH is a saved vectors folder (``embedstack train ...``), a word2vec text/binary file, a GloVe text
file or a fastText ``.vec`` file.
"""

from __future__ import annotations

from pathlib import Path

import typer

from embedstack.cli._common import (
    ENCODING_OPTION,
    ERRORS_OPTION,
    TextErrors,
    print_json,
    print_table,
    text_options,
)

__all__ = ["vectors_app", "register"]

vectors_app = typer.Typer(help="Query word vectors (nearest neighbours, analogies).", no_args_is_help=True)

_PATH = typer.Argument(..., help="Vectors folder or word2vec/GloVe/.vec file.")
_K = typer.Option(10, "-k", "--topn", help="How many answers.")
_RESTRICT = typer.Option(None, "--restrict", help="Only the N most frequent words are candidates.")
_JSON = typer.Option(False, "--json", help="Print one JSON object on stdout.")


def _table(title: str, rows: list[tuple[str, float]]) -> None:
    from rich.markup import escape

    print_table(title, ["#", "word", "cosine"], [[str(i), escape(w), f"{s:.4f}"] for i, (w, s) in enumerate(rows, 1)],
                right=("#", "cosine"))


@vectors_app.command("neighbors")
def neighbors_cmd(path: Path = _PATH, words: list[str] = typer.Argument(..., help="Query words."),
                  k: int = _K, restrict: int | None = _RESTRICT, encoding: str = ENCODING_OPTION,
                  errors: TextErrors = ERRORS_OPTION, json_out: bool = _JSON) -> None:
    """Nearest neighbours (cosine) of each WORD."""
    from embedstack.static import load_vectors

    kv = load_vectors(path, **text_options(encoding, errors))
    result: dict[str, list[dict[str, object]]] = {}
    for w in words:
        if w not in kv and kv.has_vector(w):
            hits = kv.similar_by_vector(kv.get_vector(w), topn=k, restrict_vocab=restrict)
        else:
            hits = kv.most_similar(w, topn=k, restrict_vocab=restrict)
        result[w] = [{"word": x, "score": s} for x, s in hits]
        if not json_out:
            _table(f"neighbours of {w!r}", hits)
    if json_out:
        print_json({"neighbors": result})


@vectors_app.command("analogy")
def analogy_cmd(path: Path = _PATH, a: str = typer.Argument(..., help="A"), b: str = typer.Argument(..., help="B"),
                c: str = typer.Argument(..., help="C"), k: int = _K, restrict: int | None = _RESTRICT,
                method: str = typer.Option("3cosadd", "--method", help="3cosadd or 3cosmul."),
                encoding: str = ENCODING_OPTION, errors: TextErrors = ERRORS_OPTION, json_out: bool = _JSON) -> None:
    """A is to B as C is to ?  (e.g. man king woman -> queen)."""
    from embedstack.static import load_vectors

    kv = load_vectors(path, **text_options(encoding, errors))
    hits = kv.analogy(a, b, c, method=method, topn=k, restrict_vocab=restrict)
    if json_out:
        print_json({"query": [a, b, c], "method": method, "answers": [{"word": x, "score": s} for x, s in hits]})
    else:
        _table(f"{a} : {b} :: {c} : ?", hits)


def register(app: typer.Typer) -> None:
    """Add the ``vectors`` group to the root app."""
    app.add_typer(vectors_app, name="vectors")
