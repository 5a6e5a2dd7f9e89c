"""Small pieces every asset module uses: markdown tables, checkpoint results, sample data."""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path
from typing import Any, Literal

from dagster import Config, DataVersion, MaterializeResult, MetadataValue

from model_code.runtime import settings

CONFIG_DEFAULTS_VARIABLE = settings.CONFIG_DEFAULTS.name


def config_defaults() -> dict[str, dict[str, Any]]:
    """{config class name: {field: default}} from the JSON file named by
    $VIDISTILL_CONFIG_DEFAULTS (none when unset): the defaults every launch without run config
    takes, the UI's "Materialize all" and the automation sensor's runs included. Read when the
    asset modules load, since Dagster fixes a config schema's defaults then."""
    path = settings.CONFIG_DEFAULTS.get()
    if not path:
        return {}
    try:
        defaults = json.loads(Path(path).read_text())
    except (OSError, ValueError) as error:
        raise ValueError(f"${CONFIG_DEFAULTS_VARIABLE}={path}: not a readable JSON file ({error})")
    if not isinstance(defaults, dict) or not all(isinstance(v, dict) for v in defaults.values()):
        raise ValueError(
            f"${CONFIG_DEFAULTS_VARIABLE}={path}: must map config class names to "
            '{field: default} objects, e.g. {"CaptioningConfig": {"batch_size": 8}}'
        )
    return defaults


class LaunchConfig(Config):
    """The base of every asset's launchpad config: its defaults are the class's, or those that
    $VIDISTILL_CONFIG_DEFAULTS gives for the class (checked like launchpad input: an unknown
    field or a value out of bounds stops the code location from loading, naming both)."""

    @classmethod
    def __pydantic_init_subclass__(cls, **kwargs) -> None:
        super().__pydantic_init_subclass__(**kwargs)
        overrides = config_defaults().get(cls.__name__)
        if not overrides:
            return
        unknown = sorted(set(overrides) - set(cls.model_fields))
        if unknown:
            raise ValueError(
                f"${CONFIG_DEFAULTS_VARIABLE}: {cls.__name__} has no field {', '.join(unknown)} "
                f"(its fields: {', '.join(cls.model_fields)})"
            )
        try:
            cls.model_validate(overrides)
        except ValueError as error:
            raise ValueError(f"${CONFIG_DEFAULTS_VARIABLE}: {cls.__name__}: {error}") from None
        for name, value in overrides.items():
            cls.model_fields[name].default = value
        cls.model_rebuild(force=True)


def check_config_defaults() -> None:
    """Every class named in $VIDISTILL_CONFIG_DEFAULTS is a LaunchConfig of ours (a typo is an
    error, not a default that silently does nothing); call once the asset modules are loaded."""
    names, todo = set(), [LaunchConfig]
    while todo:
        for sub in todo.pop().__subclasses__():
            names.add(sub.__name__)
            todo.append(sub)
    unknown = sorted(set(config_defaults()) - names)
    if unknown:
        raise ValueError(
            f"${CONFIG_DEFAULTS_VARIABLE}: no asset takes {', '.join(unknown)} "
            f"(config classes: {', '.join(sorted(names))})"
        )


def latest_materializations(instance, key) -> dict:
    """{partition key: its latest AssetMaterialization} for every materialized partition of
    the partitioned asset `key`, from Dagster's records (what exists is what Dagster says)."""
    from dagster import AssetRecordsFilter

    latest = {}
    for partition in sorted(instance.get_materialized_partitions(key)):
        records = instance.fetch_materializations(
            AssetRecordsFilter(asset_key=key, asset_partitions=[partition]), limit=1
        ).records
        if records:
            latest[partition] = (records[0].asset_materialization, records[0].timestamp)
    return latest


def md_table(rows: list[dict], max_rows: int = 10) -> MetadataValue:
    """A markdown table for the UI (first `max_rows` rows)."""
    rows = rows[:max_rows]
    if not rows:
        return MetadataValue.md("_(none)_")
    cols = list(rows[0])

    def cell(v) -> str:
        if isinstance(v, float):
            v = f"{v:.3f}"
        return str(v).replace("|", "\\|").replace("\n", " ")[:120]

    lines = ["| " + " | ".join(cols) + " |", "|" + "---|" * len(cols)]
    lines += ["| " + " | ".join(cell(r.get(c, "")) for c in cols) + " |" for r in rows]
    return MetadataValue.md("\n".join(lines))


def file_version(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()[:16]


def checkpoint_result(folder: Path, lineage: dict, extra: dict | None = None) -> MaterializeResult:
    """Metadata + DataVersion of a checkpoint folder, from its lineage.json record."""
    from model_code.training.job import checkpoint_metadata

    metadata = checkpoint_metadata(folder, lineage, extra)
    metadata["path"] = MetadataValue.path(str(folder))
    metadata["parents"] = MetadataValue.json(metadata["parents"])
    return MaterializeResult(metadata=metadata, data_version=DataVersion(lineage["version"]))


def launchpad_config(
    trainer_config: type, name: str, exclude: tuple[str, ...] = (), **extra: tuple[type, Any]
) -> type[Config]:
    """A Dagster Config class with one field per field of a trainer's dataclass
    (model_code.training.configs): its type, default, bounds, choices and help, so the launchpad
    and the trainer's CLI share the one set of defaults. `extra` adds asset-only fields as
    (type, pydantic Field); `exclude` leaves out trainer fields the asset sets itself."""
    from pydantic import Field, create_model

    from model_code.training.configs import DEVICE, field_specs
    from resources.fields import OptionalDirOrNone

    fields: dict[str, Any] = {}
    for field_name, hint, default, meta in field_specs(trainer_config):
        if field_name in exclude:
            continue
        kind = Literal[meta["choices"]] if "choices" in meta else hint
        kind = OptionalDirOrNone if meta.get("folder") else kind
        bounds = {k: meta[k] for k in ("ge", "gt") if k in meta}
        if field_name == "device":
            bounds["pattern"] = DEVICE.pattern
        fields[field_name] = (kind, Field(default=default, description=meta["help"], **bounds))
    fields.update(extra)
    model = create_model(name, __base__=LaunchConfig, __doc__=trainer_config.__doc__, **fields)
    model.__module__ = __name__
    return model


def trainer_fields(
    config: Config, trainer_config: type, exclude: tuple[str, ...] = ()
) -> dict[str, Any]:
    """The trainer's part of a launchpad config: what goes in the job's `config` (less the
    fields `exclude` names, which the asset sets)."""
    from dataclasses import fields

    return {
        f.name: getattr(config, f.name) for f in fields(trainer_config) if f.name not in exclude
    }


def train_through_launcher(
    context,
    *,
    launcher,
    tracking,
    store,
    accelerators,
    module: str,
    name: str,
    job: dict,
    params: dict | None = None,
    extra: dict | None = None,
) -> MaterializeResult:
    """Run a trainer program through the launcher inside an MLflow run that rank 0 logs its
    curves to; the materialization is what rank 0 reported, plus `extra`."""
    config = job["config"]
    with tracking.run(name, params={**config, **(params or {})}) as run:
        return launcher.train(
            context,
            module=module,
            job=job,
            name=re.sub(r"[^A-Za-z0-9_.=+-]+", "-", name).strip("-"),
            store=store,
            nproc=config["nproc_per_node"],
            device=config["device"],
            accelerators=accelerators,
            env=tracking.env(run.run_id),
            extra=extra,
        )
