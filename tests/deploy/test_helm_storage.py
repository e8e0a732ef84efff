"""The chart's `storage` values reach the operator as the settings docs/storage.md describes (rendered with the real
helm and read back by OperatorSettings.from_env), and stay out of the default install."""

from __future__ import annotations

from kubetune.operator.settings import OperatorSettings

from . import render

STORAGE = {
    "storage": {
        "modelCache": {"claimName": "models", "size": "500Gi", "storageClassName": "efs"},
        "adapterStore": {"claimName": "adapters", "create": False, "accessMode": "ReadWriteOnce"},
        "scratchSize": "80Gi",
    }
}


def operator_env(values: dict) -> dict[str, str]:
    deployment = render.one(render.helm_template(values), "Deployment", "kubetune-operator")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    return {item["name"]: item["value"] for item in container.get("env") or [] if "value" in item}


def test_storage_values_become_operator_settings():
    render.helm_lint(STORAGE)
    settings = OperatorSettings.from_env(operator_env(STORAGE))
    assert (settings.model_cache_claim, settings.model_cache_size) == ("models", "500Gi")
    assert settings.model_cache_storage_class == "efs" and settings.model_cache_access_mode == "ReadWriteMany"
    assert settings.model_cache_create is True
    assert (settings.adapter_store_claim, settings.adapter_store_create) == ("adapters", False)
    assert settings.adapter_store_access_mode == "ReadWriteOnce" and settings.scratch_size == "80Gi"


def test_the_default_install_sets_no_storage_setting():
    assert not [name for name in operator_env({}) if "CACHE" in name or "STORE" in name or "SCRATCH" in name]
