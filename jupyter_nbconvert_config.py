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
c.TagRemovePreprocessor.remove_input_tags = {"hide-input"}   # the code that words a conclusion: not for the reader
c.TagRemovePreprocessor.remove_cell_tags = {"colab-setup"}    # the Colab set-up cell: does nothing outside Colab
