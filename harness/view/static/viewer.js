// Draws every Vega-Lite spec the page carries in <script type="application/json" data-chart=ID>
// into the element ID. Expressions go through Vega's interpreter (ast: true), so that the
// page's Content-Security-Policy needs no 'unsafe-eval'.
(function () {
  "use strict";
  function draw() {
    document.querySelectorAll("script[type='application/json'][data-chart]").forEach(function (node) {
      var target = document.getElementById(node.getAttribute("data-chart"));
      if (!target) { return; }
      var spec = JSON.parse(node.textContent);
      vegaEmbed(target, spec, { renderer: "svg", actions: false, ast: true, expr: vega.expressionInterpreter })
        .then(function () { target.setAttribute("data-rendered", "true"); })
        .catch(function (error) { target.textContent = "this plot could not be drawn: " + error; console.error(error); });
    });
  }
  if (document.readyState === "loading") { document.addEventListener("DOMContentLoaded", draw); } else { draw(); }
})();
