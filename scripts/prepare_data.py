"""Convert a dataset, as its authors ship it, into a root of training clips (configs/prepare_data.yaml).

    python scripts/prepare_data.py source=pointodyssey root=/data/point_odyssey out=/data/clips/pointodyssey
    python scripts/prepare_data.py source=tartanair root=/data/tartanair out=/data/clips/tartanair workers=32 limit=100

Resumes where a killed run stopped; ends with out/index.jsonl and out/report.md (one4d.data.prepare). data/sources.md
lists the sources and the layout each expects. Bad input: one line on stderr, exit 2.
"""

import sys

import hydra

from one4d.data.prepare import prepare, settings_from_config, source_argument_problem


@hydra.main(config_path="../configs", config_name="prepare_data", version_base="1.3")
def main(cfg) -> None:
    try:
        summary = prepare(settings_from_config(cfg))
    except (ValueError, ImportError) as error:  # bad input or a missing optional extra: one clear line
        print(f"error: {error}", file=sys.stderr)
        sys.exit(2)
    print(f"{summary['clips']} clips in {cfg.out} ({summary['converted']} converted, {summary['kept']} kept from an earlier run), "
          f"{summary['skipped_segments']} segments and {summary['skipped_sequences']} sequences skipped, "
          f"{summary['flagged']} flagged by the self-check; see {cfg.out}/report.md")
    if summary["clips"] == 0:
        print("error: no clip was written; report.md says why", file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    problem = source_argument_problem(sys.argv[1:])
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        sys.exit(2)
    main()
