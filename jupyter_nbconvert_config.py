# Read by `jupyter nbconvert` started in this folder: its PDF (LaTeX) route uses the project's template
# (templates/latex_ru: fonts with Cyrillic, long lines wrapped), so `jupyter nbconvert --to pdf 02_unet.ipynb` works.
import os

c = get_config()  # noqa: F821
c.TemplateExporter.extra_template_basedirs = [os.path.join(os.path.dirname(os.path.abspath(__file__)), "templates")]
c.PDFExporter.template_name = "latex_ru"
c.LatexExporter.template_name = "latex_ru"
