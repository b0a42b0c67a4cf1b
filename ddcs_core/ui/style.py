"""The look: a soft, restrained theme with system fonts (nothing fetched from the internet) and the CSS
of the HTML fragments in render.py, written against the theme's variables so dark mode follows."""

from __future__ import annotations

import gradio as gr

FONT = ("Inter", "ui-sans-serif", "system-ui", "-apple-system", "Segoe UI", "sans-serif")
MONO = ("ui-monospace", "SFMono-Regular", "Menlo", "monospace")


def theme() -> gr.themes.Base:
    return gr.themes.Soft(primary_hue="teal", secondary_hue="slate", neutral_hue="slate",
                          font=FONT, font_mono=MONO, radius_size="md").set(
        block_label_background_fill="transparent", block_label_text_color="*neutral_600",
        block_title_background_fill="transparent", block_title_text_color="*neutral_600",
        block_label_text_weight="600", block_title_text_weight="600")


CSS = """
.gradio-container { width: 100% !important; max-width: 1360px !important; margin: 0 auto !important; }
#ddcs-title h1 { font-size: 1.6rem; margin: 0.2rem 0 0; letter-spacing: -0.01em; }
#ddcs-title p { margin: 0.1rem 0 0.4rem; color: var(--body-text-color-subdued); }
.ddcs-summary { display: grid; grid-template-columns: repeat(auto-fit, minmax(150px, 1fr)); gap: 12px; }
.ddcs-stat { background: var(--block-background-fill); border: 1px solid var(--border-color-primary);
  border-radius: 12px; padding: 12px 16px; }
.ddcs-stat-label { font-size: 0.72rem; text-transform: uppercase; letter-spacing: 0.06em;
  color: var(--body-text-color-subdued); }
.ddcs-stat-value { font-size: 1.7rem; font-weight: 600; font-variant-numeric: tabular-nums; margin: 2px 0; }
.ddcs-stat-note { font-size: 0.75rem; color: var(--body-text-color-subdued); line-height: 1.3; }
.ddcs-profile, .ddcs-gallery-head { font-size: 0.82rem; color: var(--body-text-color-subdued); margin: 8px 2px; }
.ddcs-gallery { display: grid; grid-template-columns: repeat(auto-fill, minmax(168px, 1fr)); gap: 10px; }
.ddcs-card { appearance: none; font: inherit; color: inherit; text-align: left; cursor: pointer;
  background: var(--block-background-fill); border: 1px solid var(--border-color-primary);
  border-radius: 12px; padding: 6px 6px 8px; transition: box-shadow .15s, border-color .15s; }
.ddcs-card:hover { border-color: var(--color-accent); box-shadow: 0 2px 10px rgba(15, 23, 42, .08); }
.ddcs-pair { display: grid; grid-template-columns: 1fr 1fr; gap: 4px; }
.ddcs-pair img, .ddcs-pair .ddcs-noimg { width: 100%; aspect-ratio: 1; object-fit: cover; border-radius: 8px; display: block; }
.ddcs-noimg { display: flex; align-items: center; justify-content: center; font-size: 0.7rem; text-align: center;
  color: var(--body-text-color-subdued); border-radius: 8px; aspect-ratio: 1;
  background: repeating-linear-gradient(135deg, var(--background-fill-secondary) 0 6px, var(--background-fill-primary) 6px 12px);
  border: 1px dashed var(--border-color-primary); }
.ddcs-cap { font-size: 0.8rem; margin-top: 5px; white-space: nowrap; overflow: hidden; text-overflow: ellipsis; }
.ddcs-small { font-size: 0.74rem; color: var(--body-text-color-subdued); margin-top: 1px; }
.ddcs-rank { font-variant-numeric: tabular-nums; color: var(--body-text-color-subdued); }
.ddcs-label { font-weight: 600; }
.ddcs-dot { display: inline-block; width: 8px; height: 8px; border-radius: 50%; margin-right: 5px; vertical-align: 0; }
.ddcs-ok .ddcs-dot { background: #2a9d8f; }
.ddcs-miss .ddcs-dot { background: #e76f51; }
.ddcs-copy .ddcs-dot { background: #7c3aed; }
.ddcs-detail { display: flex; gap: 24px; flex-wrap: wrap; align-items: flex-start; }
.ddcs-fig { margin: 0; text-align: center; }
.ddcs-fig figcaption { font-size: 0.82rem; color: var(--body-text-color-subdued); margin-top: 6px; line-height: 1.35; }
img.ddcs-big { width: 256px; height: 256px; border-radius: 12px; object-fit: cover; display: block; }
img.ddcs-mid { width: 128px; height: 128px; border-radius: 10px; object-fit: cover; display: block; margin: 0 auto; }
.ddcs-detail .ddcs-noimg.ddcs-big { width: 256px; height: 256px; }
.ddcs-strip .ddcs-noimg.ddcs-mid { width: 128px; height: 128px; margin: 0 auto; }
.ddcs-facts th, .ddcs-facts td, .ddcs-table th, .ddcs-table td { border: none !important; background: none; }
.ddcs-facts { border-collapse: collapse; font-size: 0.88rem; min-width: 300px; flex: 1; }
.ddcs-facts th { text-align: left; font-weight: 500; color: var(--body-text-color-subdued); padding: 5px 16px 5px 0; white-space: nowrap; }
.ddcs-facts td { padding: 5px 0; font-variant-numeric: tabular-nums; word-break: break-all; }
.ddcs-facts tr, .ddcs-table tbody tr { border: none !important; border-bottom: 1px solid var(--border-color-primary) !important; }
.ddcs-table thead tr { border: none !important; border-bottom: 2px solid var(--border-color-primary) !important; }
.ddcs-facts, .ddcs-table { border: none !important; }
.ddcs-h3 { font-size: 0.95rem; font-weight: 600; margin: 18px 0 8px; }
.ddcs-strip { display: flex; gap: 18px; flex-wrap: wrap; }
.ddcs-pool { padding: 8px; border-radius: 12px; border: 1px solid transparent; max-width: 170px; }
.ddcs-current { border-color: var(--color-accent); }
.ddcs-table { border-collapse: collapse; width: 100%; font-size: 0.86rem; font-variant-numeric: tabular-nums; }
.ddcs-table th { text-align: right; font-weight: 600; padding: 8px 10px; white-space: nowrap; }
.ddcs-table td { text-align: right; padding: 7px 10px; vertical-align: middle; }
.ddcs-table th:first-child, .ddcs-table td:first-child { text-align: left; }
.ddcs-exposure td, .ddcs-exposure th { text-align: left; }
.ddcs-exposure code { font-size: 0.75rem; color: var(--body-text-color-subdued); word-break: break-all; }
.ddcs-click { cursor: pointer; }
.ddcs-click:hover { background: var(--background-fill-secondary); }
.ddcs-tiny { width: 40px; height: 40px; border-radius: 6px; object-fit: cover; display: block; }
.ddcs-muted { color: var(--body-text-color-subdued); font-size: 0.82rem; }
.ddcs-grids { display: flex; gap: 16px; flex-wrap: wrap; }
.ddcs-grid { flex: 1 1 300px; max-width: 420px; }
.ddcs-grid img { width: 100%; border-radius: 10px; display: block; }
.ddcs-notice { padding: 12px 16px; border-radius: 10px; font-size: 0.9rem; border: 1px solid var(--border-color-primary);
  background: var(--background-fill-secondary); }
.ddcs-warn { border-color: #e9c46a; }
.ddcs-error { border-color: #e76f51; }
.ddcs-job { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 12px 16px; }
.ddcs-job-head { font-size: 0.9rem; margin-bottom: 8px; }
.ddcs-badge { font-size: 0.72rem; padding: 2px 8px; border-radius: 999px; background: var(--background-fill-secondary);
  border: 1px solid var(--border-color-primary); margin: 0 6px; }
.ddcs-job-done .ddcs-badge { border-color: #2a9d8f; }
.ddcs-job-failed .ddcs-badge, .ddcs-job-interrupted .ddcs-badge { border-color: #e76f51; }
.ddcs-bar { height: 8px; border-radius: 999px; background: var(--background-fill-secondary); overflow: hidden; }
.ddcs-bar > div { height: 100%; background: var(--color-accent); transition: width .4s; }
.ddcs-job-msg { font-size: 0.82rem; margin-top: 6px; color: var(--body-text-color-subdued); font-variant-numeric: tabular-nums; }
#ddcs-preview { border: 1px solid var(--border-color-primary); border-radius: 12px; padding: 12px; min-height: 260px; }
.ddcs-preview-img { width: 100%; max-width: 220px; aspect-ratio: 1; border-radius: 10px; object-fit: cover; display: block; margin: 0 auto; }
.ddcs-preview-cap { font-size: 0.82rem; margin-top: 8px; text-align: center; line-height: 1.4; }
#ddcs-pager { align-items: center; justify-content: center; gap: 8px; }
#ddcs-page-label { text-align: center; font-variant-numeric: tabular-nums; }
img.ddcs-dim { opacity: .45; filter: grayscale(.5); }
.ddcs-cap.ddcs-wrap { white-space: normal; line-height: 1.3; }
.ddcs-status { display: flex; align-items: center; gap: 10px; font-size: 0.84rem; padding: 6px 12px; margin: 2px 0;
  border: 1px solid var(--color-accent); border-radius: 10px; background: var(--background-fill-secondary);
  font-variant-numeric: tabular-nums; }
.ddcs-status .ddcs-bar { flex: 0 0 140px; height: 6px; }
.ddcs-precomputed { font-size: 0.8rem; color: var(--body-text-color-subdued); margin: 0 2px 6px; }
.ddcs-precomputed b { color: var(--body-text-color); font-weight: 600; }
.ddcs-single { grid-template-columns: 1fr; }
"""
