"""`config.explanation_loss`: the settings of explanation-guided training (mtljax/egl/losses.py).
A config file builds the section with `explanation_loss_config(...)` and names the term
"explanation" in `config.objective.terms`."""

import ml_collections


def explanation_loss_config(
  *,
  task: str,
  modality: str = "image",
  kind: str = "none",
  lam: float = 1.0,
  saliency: str = "input_gradient",
  mask_fraction=0.2,
) -> ml_collections.ConfigDict:
  """`config.explanation_loss`: explanation-guided training (mtljax/egl/losses.py), the
  "explanation" term of `config.objective.terms`. `mask_fraction` may be a FieldReference shared
  with the reader's `config.data.mask_fraction` (the annotated training examples)."""
  return ml_collections.ConfigDict(
    {
      # "none", "rrr", "gradia", "res" or "megl"; its weight λ.
      "kind": kind,
      "lam": lam,
      # The supervised map: a method of mtljax.attribution.methods.METHODS, "<method>" or
      # "<method>@<module path>" for a layer method ("saliency" alias "input_gradient",
      # "input_x_gradient", "grad_cam@..." alias "gradcam@...", "integrated_gradients", ...).
      "saliency": saliency,
      # The model's mode inside the map: "train" (batch statistics and dropout, the forward pass
      # of the task loss) or "eval" (BatchNorm running statistics, no dropout: each example's map
      # depends on that example only, as the scored one; with BatchNorm the lagging running
      # statistics made RRR diverge on shortcut CUB: docs/notes/explanation-guided-rounds.md).
      "saliency_mode": "train",
      # The explained classification task and its image input.
      "task": task,
      "modality": modality,
      # Fraction of the training examples whose mask is given (the rest: flag 0).
      "mask_fraction": mask_fraction,
      # Pixels by which rrr/gradia/megl grow each mask (boundary tolerance; 0 = as annotated).
      "mask_dilation": 0,
      # RRR's input gradient: of Σ_k log p_k ("sum_log_probs", Ross et al. 2017), of log p_y, the
      # example's own class ("true_log_prob"), or of each log p_k − mean_j log p_j
      # ("centred_log_probs"): the sum vanishes at uniform p, log p_y as p_y → 1, the centred
      # ones with neither (mtljax/egl/losses.py `rrr_scores`).
      "rrr_output": "sum_log_probs",
      # RRR as a share: each example's penalty divided by the same sum over the whole image
      # (the share of its squared map outside M, in [0, 1]). Scale-free: the plain form can be
      # lowered by shrinking every logit, which is how RRR kept the decoy on shortcut CUB.
      "rrr_share": False,
      # RRR at a coarser scale: (1 − M) ⊙ ∂ₓ summed over rrr_pool × rrr_pool blocks before it is
      # squared (1 = per pixel, the published form). A shortcut the model reads as a patch's
      # mean colour has a per-pixel gradient 1/n of the patch's: per pixel its square is 1/n².
      "rrr_pool": 1,
      # RES: soft threshold tanh(beta·Ŝ), the level inside the mask, slack pixels at boundaries.
      "res_threshold": 0.5,
      "res_slack": 1,
      "res_beta": 4.0,
      # MEGL: weight of the distribution consistency; the multilabel task whose heads' maps a
      # textual rationale's attributes name ("" = no textual supervision).
      "megl_consistency": 1.0,
      "attribute_task": "",
      # MEGL's textual target: "attribute_maps" (the named attributes' own saliency maps) or
      # "part_regions" (their annotated part regions: discs around the parts' keypoints).
      "rationale_target": "attribute_maps",
    }
  )
