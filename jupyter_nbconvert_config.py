# nbconvert's PDF (LaTeX) route with the project's template (templates/latex_ru: fonts with Cyrillic, long lines
# wrapped), from any folder:
#     jupyter nbconvert --to pdf --config jupyter_nbconvert_config.py 02_unet.ipynb
# (without it, nbconvert's default font has no Cyrillic glyphs and every Russian letter is lost). run_all.py uses
# the same template.
import os

c = get_config()  # noqa: F821
c.TemplateExporter.extra_template_basedirs = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")]
c.PDFExporter.template_name = "latex_ru"
c.LatexExporter.template_name = "latex_ru"
# the reader sees the report, not its machinery (as run_all.py exports it): no code of the cells that word a
# conclusion or set up the run (their output stays), no parameters cells, no Colab set-up cell, no "[12]:" prompts
c.TagRemovePreprocessor.remove_input_tags = {"hide-input"}
c.TagRemovePreprocessor.remove_cell_tags = {"parameters", "injected-parameters", "colab-setup"}
c.TemplateExporter.exclude_input_prompt = True
c.TemplateExporter.exclude_output_prompt = True
