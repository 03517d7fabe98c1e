"""The SmolLM2 base recipe's settings (YAML presets: src/vladva/configs/pretrain_smollm2*.yaml)."""

from __future__ import annotations

from dataclasses import dataclass, field

from vladva.model.lora import LoraSettings
from vladva.toyworld.base.lvlm import TaskMix

STAGES = ("heal", "align", "instruct", "vladva", "dual")


@dataclass
class GeneralTextConfig:
    """Plain-language completions the full LLM writes once (cached in OUT/general_text.jsonl)."""

    completions_per_prompt: int = 2
    max_new_tokens: int = 64
    temperature: float = 0.7  # sampled (seeded), so the completions of one prompt differ
    batch_size: int = 16
    max_prompts: int = 0  # 0: every prompt of vladva.toyworld.base.smollm2.prompts

    def validate(self) -> None:
        if self.completions_per_prompt < 1 or self.max_new_tokens < 1 or self.batch_size < 1:
            raise ValueError("general: completions_per_prompt, max_new_tokens and batch_size must be >= 1")


@dataclass
class HealConfig:
    """Stage 0: distil the full LLM's next-token distributions into its truncated copy (LoRA + the
    final norm), on text only. Each sequence is drawn by task weight (ChatML user turn ->
    assistant answer): short captions, long captions, instruction QA of the world (without the
    image) and the full LLM's own plain-language completions."""

    steps: int = 300
    max_seconds: float = 5400.0
    batch_size: int = 16
    max_tokens: int = 160  # longer sequences are cut
    lr: float = 1e-3
    warmup: int = 10
    weight_decay: float = 0.0
    teacher_layers: int = 0  # 0: the full LLM teaches (tests use a truncated teacher)
    short_caption: float = 1.0
    long_caption: float = 1.0
    instruction: float = 1.0
    general: float = 2.0
    eval_sequences: int = 96  # held-out sequences for the before / after CE and KL
    log_every: int = 10
    checkpoint_every: int = 20

    def validate(self) -> None:
        if self.steps < 1 or self.batch_size < 1:
            raise ValueError("heal.steps and heal.batch_size must be >= 1")


@dataclass
class LlavaStageConfig:
    """Stage 1 (align) or 2 (instruct): the LLaVA base trained on image -> text (and text) tasks
    with the projector at `lr` and LoRA + final norm at `lora_lr` (0 freezes them)."""

    steps: int = 600
    max_seconds: float = 5400.0
    batch_long: int = 4
    batch_short: int = 12
    batch_text: int = 0
    lr: float = 1e-3
    lora_lr: float = 1e-4
    warmup: int = 20
    weight_decay: float = 0.0
    tasks: TaskMix = field(default_factory=TaskMix)
    log_every: int = 10
    checkpoint_every: int = 25

    def validate(self) -> None:
        if self.steps < 1:
            raise ValueError("steps must be >= 1")
        if self.batch_long + self.batch_short + self.batch_text < 1:
            raise ValueError("at least one of batch_long, batch_short, batch_text must be > 0")


def _align() -> LlavaStageConfig:
    # LLaVA's stage 1: image -> short and long captions only.
    tasks = TaskMix(instruction=0.0, image_summary=0.0, text_caption=0.0, text_long_caption=0.0, text_summary=0.0)
    return LlavaStageConfig(steps=700, batch_long=4, batch_short=12, batch_text=0, lr=1e-3, lora_lr=1e-4, tasks=tasks)


def _instruct() -> LlavaStageConfig:
    # Stage 2: captions, instruction QA, one-word summaries of images and sentences, and the full
    # LLM's plain-language answers (rehearsal of its language).
    tasks = TaskMix(
        short_caption=1.0,
        instruction=2.0,
        image_summary=1.0,
        text_caption=0.0,
        text_long_caption=0.0,
        text_summary=1.0,
        general_text=1.0,
    )
    return LlavaStageConfig(steps=600, batch_long=4, batch_short=12, batch_text=4, lr=5e-4, lora_lr=5e-4, tasks=tasks)


@dataclass
class Smollm2ChecksConfig:
    """Held-out checks after each stage (val records); 0 skips one."""

    caption_images: int = 200
    instruction_images: int = 100
    retrieval_images: int = 200
    generated_examples: int = 3
    plain_prompts: int = 6  # held-out plain-language prompts answered by the LLM / the LVLM
    max_new_tokens: int = 48


@dataclass
class Smollm2RecipeConfig:
    """The SmolLM2 base and its two embedders: stages heal, align, instruct (the LVLM), vladva (the
    VladVA fine-tune, `vladva_recipe`) and dual (the dual encoder on the same pairs, `dual_recipe`).
    `*_overrides`: `key=value` lines applied to those training recipes."""

    seed: int = 0
    device: str = "cpu"
    threads: int = 1
    # What the stages' `max_seconds` count: "cpu" (this process's CPU seconds, so a budget means
    # the same on a busy shared machine as on an idle one) or "wall".
    clock: str = "cpu"
    llm: str = "smollm2"
    layers: int = 6  # decoder layers kept (0: all 30)
    vision: str = "default"
    max_train_records: int = 0  # 0: all
    max_val_records: int = 0
    stages: list[str] = field(default_factory=lambda: list(STAGES))
    lora: LoraSettings = field(default_factory=LoraSettings)
    general: GeneralTextConfig = field(default_factory=GeneralTextConfig)
    heal: HealConfig = field(default_factory=HealConfig)
    align: LlavaStageConfig = field(default_factory=_align)
    instruct: LlavaStageConfig = field(default_factory=_instruct)
    checks: Smollm2ChecksConfig = field(default_factory=Smollm2ChecksConfig)
    vladva_recipe: str = "smollm2.yaml"  # a file in src/vladva/configs, or a path
    vladva_overrides: list[str] = field(default_factory=list)
    dual_recipe: str = "smollm2_dual.yaml"
    dual_overrides: list[str] = field(default_factory=list)

    def validate(self) -> None:
        bad = [s for s in self.stages if s not in STAGES]
        if bad:
            raise ValueError(f"stages: unknown stage {bad[0]!r}; known: {', '.join(STAGES)}")
        if self.layers < 0:
            raise ValueError("layers must be >= 0 (0: all)")
        if self.threads < 1:
            raise ValueError("threads must be >= 1")
        if self.clock not in ("cpu", "wall"):
            raise ValueError(f"clock must be cpu or wall, got {self.clock!r}")
