// MathJax for the formulas that pymdownx.arithmatex marks (the docstrings' .. math:: blocks and
// :math: roles, turned into $$...$$ and $...$ by docs/hooks/sphinx_roles.py).
window.MathJax = {
  tex: {
    inlineMath: [["\\(", "\\)"]],
    displayMath: [["\\[", "\\]"]],
    processEscapes: true,
    processEnvironments: true,
  },
  options: {
    ignoreHtmlClass: ".*|",
    processHtmlClass: "arithmatex",
  },
};

// Material announces each page it shows (document$): typeset its formulas.
document$.subscribe(() => {
  if (window.MathJax && MathJax.typesetPromise) {
    MathJax.typesetPromise();
  }
});
